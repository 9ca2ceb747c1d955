"""NVLink all-to-all cost inside one node (expert-parallel MoE dispatch / combine).

Model, per GPU type and per number of GPUs ``g`` in the all-to-all (2, 4 or 8, one node):

    time_s = latency_s + bytes_per_rank / algbw_bytes_s

* ``bytes_per_rank``: the size in bytes of ONE rank's whole send buffer, i.e. the sum of the
  ``g`` equal chunks it sends, one to every rank of the group *including itself* (the
  NCCL-tests ``alltoall`` "size"; the MoE dispatch analogue is the tokens a rank routes times
  hidden size times 2 bytes, whatever their destination).  Only ``(g - 1) / g`` of it crosses
  NVLink; that factor is folded into ``algbw`` (bus bandwidth = algbw * (g - 1) / g).
* ``algbw_gb_s`` is reported in GB/s with GB = 1e9 bytes; ``latency_s`` in seconds.

Data: microsoft/apex_plus @ 8769096 (MIT), ``profile/comm/<gpu>/alltoall.csv``, NCCL 2.18.3 /
CUDA 12.1, copied byte for byte to ``models/calibration/alltoall/<gpu_id>.csv`` (provenance:
``models/calibration/PROVENANCE.md``).  Columns ``gpu,num_nodes,num_gpus_per_node,dtype,
size(kb),time(us)``.  Conventions of that table (read from apex_plus's profiler and simulator,
see the provenance entry for file / line evidence):

* ``size(kb)`` = the per-rank send buffer in KiB: ``profile/scripts/comm.py``
  ``profile_alltoall`` allocates ``in_buffer = cp.ones(size, dtype)`` on every rank, sends
  ``in_buffer.size // world_size`` elements to each of the ``world_size`` ranks
  (``do_all_to_all``) and logs ``int(size * dtype().nbytes / KB)`` with ``KB = 1 << 10``.
  apex_plus's simulator looks the table up with the same meaning (``num_elements`` = local
  tokens x hidden of one rank, ``size = num_elements * dtype.size // KB``).  So
  ``bytes_per_rank = size(kb) * 1024`` (:data:`BYTES_PER_KB`).
* both values are truncated to integers by ``int()``: ``time(us)`` is floored (on average
  ~0.5 us low, which biases ``latency_s`` down by about that much: 4-8 % of a 6-15 us latency),
  and the smallest fp16 message (2**8 elements = 512 B) is logged as ``size(kb)`` 0.  Rows
  with ``size(kb)`` 0 are therefore not used (their true size is not in the table); the
  latency is pinned by the 1-512 KiB rows, where the measured time is flat.
* only ``dtype == "half"`` rows are used (16-bit activations; the only rows of the H200 table).
  The H100 table also has fp32 rows: above 256 KiB they agree with the fp16 rows, below it
  some take 30-1,900 us (outliers of the profiling run), so they are left out.

Fit: ``scipy.optimize.least_squares`` on log residuals ``log(pred / measured)`` (relative
error), parameters in log space (both stay positive), soft-L1 loss with f_scale 0.1 (as
``sim.calibration.calibrate``).  Judged held out: fitted on the even-indexed message sizes
(sorted ascending, after dropping size 0) and scored on the odd-indexed ones: median absolute
percentage error (MdAPE) and signed median error (bias, predicted over measured minus one).
The coefficients kept are the fit on all the points.

``python -m sim.calibration.alltoall_fit`` writes ``models/calibration/alltoall_fit.csv`` (the
checkout's, :func:`sim.calibration.outputs.refit_models_dir`) and prints it;
``tests/calibration/test_alltoall_fit.py`` checks that the committed file equals a refit.
"""
from __future__ import annotations

import math
import sys

import numpy as np
import pandas as pd
from scipy.optimize import least_squares

from sim.calibration.outputs import refit_models_dir
from sim.core.errors import UserError
from sim.core.resources import model_file

# catalog GPU id -> apex_plus profile folder the table was copied from
SOURCES = {"h100-sxm": "H100-SXM-80GB", "h200": "H200-SXM-141GB"}
SOURCE_REPO = "microsoft/apex_plus@8769096536a34e8b3010fd444021f13858663a93"
BYTES_PER_KB = 1024      # comm.py: KB = 1 << 10; size(kb) = int(array_size / KB)
DTYPE = "half"
GB = 1e9                 # algbw_gb_s unit (decimal GB, as NCCL-tests)
FIT_FILE = ("calibration", "alltoall_fit.csv")
COLUMNS = ["gpu", "gpus", "latency_s", "algbw_gb_s", "points", "heldout_mdape_pct", "heldout_bias_pct", "source"]


def load_alltoall(gpu_id: str) -> pd.DataFrame:
    """The apex_plus all-to-all table of ``gpu_id`` (a catalog id, e.g. ``h100-sxm``), as copied."""
    p = model_file("calibration", "alltoall", f"{gpu_id}.csv")
    if not p.is_file():
        raise UserError(f"no all-to-all table for GPU {gpu_id!r}: {p} is missing "
                        f"(tables exist for {', '.join(sorted(SOURCES))})")
    return pd.read_csv(p)


def fit_rows(gpu_id: str) -> pd.DataFrame:
    """The rows the fit uses, one per (gpus, size): fp16, one node, size(kb) > 0, with
    ``bytes_per_rank`` (the per-rank send buffer) and ``time_s``."""
    d = load_alltoall(gpu_id)
    d = d[(d["dtype"] == DTYPE) & (d["num_nodes"] == 1) & (d["size(kb)"] > 0)]
    out = pd.DataFrame({"gpus": d["num_gpus_per_node"].astype(int),
                        "bytes_per_rank": d["size(kb)"].astype(float) * BYTES_PER_KB,
                        "time_s": d["time(us)"].astype(float) * 1e-6})
    return out.sort_values(["gpus", "bytes_per_rank"], kind="stable").reset_index(drop=True)


def alltoall_time_s(bytes_per_rank, latency_s: float, algbw_bytes_s: float):
    """Predicted all-to-all time (s) for a per-rank send buffer of ``bytes_per_rank`` bytes."""
    return latency_s + np.asarray(bytes_per_rank, dtype=float) / algbw_bytes_s


def fit_latency_bw(bytes_per_rank, time_s) -> tuple[float, float]:
    """``(latency_s, algbw_bytes_s)`` minimising the (soft-L1) log residuals."""
    b, y = np.asarray(bytes_per_rank, float), np.log(np.asarray(time_s, float))
    if len(b) < 2 or b.max() <= b.min():
        raise ValueError("need at least two distinct message sizes")
    # start: latency = the smallest time, bandwidth from the largest message
    lat0 = float(np.exp(y[np.argmin(b)]))
    bw0 = float(b.max() / max(np.exp(y[np.argmax(b)]) - lat0, 0.1 * np.exp(y[np.argmax(b)])))

    def res(z):
        return np.log(alltoall_time_s(b, math.exp(z[0]), math.exp(z[1]))) - y

    z = least_squares(res, [math.log(lat0), math.log(bw0)], loss="soft_l1", f_scale=0.1,
                      xtol=1e-15, ftol=1e-15, gtol=1e-15).x
    return math.exp(z[0]), math.exp(z[1])


def fit_alltoall(gpu_id: str) -> dict[int, dict]:
    """Per number of GPUs ``g``: ``latency_s``, ``algbw_gb_s`` (fit on all points), ``points``
    (rows in that fit), ``heldout_mdape_pct`` and ``heldout_bias_pct`` (fit on the even-indexed
    sizes, scored on the odd-indexed ones; bias is the signed median of predicted/measured - 1)."""
    rows = fit_rows(gpu_id)
    out: dict[int, dict] = {}
    for g, d in rows.groupby("gpus", sort=True):
        b, t = d.bytes_per_rank.to_numpy(), d.time_s.to_numpy()
        idx = np.arange(len(d))
        tr, te = idx % 2 == 0, idx % 2 == 1
        lat_h, bw_h = fit_latency_bw(b[tr], t[tr])
        err = alltoall_time_s(b[te], lat_h, bw_h) / t[te] - 1.0
        lat, bw = fit_latency_bw(b, t)
        out[int(g)] = {"latency_s": lat, "algbw_gb_s": bw / GB, "points": int(len(d)),
                       "heldout_mdape_pct": float(np.median(np.abs(err)) * 100.0),
                       "heldout_bias_pct": float(np.median(err) * 100.0)}
    return out


def fit_table() -> pd.DataFrame:
    """Every GPU's fit as the rows of ``models/calibration/alltoall_fit.csv``."""
    recs = []
    for gpu_id, folder in SOURCES.items():
        for g, f in fit_alltoall(gpu_id).items():
            recs.append({"gpu": gpu_id, "gpus": g, **f,
                         "source": f"{SOURCE_REPO} profile/comm/{folder}/alltoall.csv "
                                   f"(dtype {DTYPE}, size(kb)>0; bytes_per_rank = size(kb)*1024)"})
    return pd.DataFrame(recs, columns=COLUMNS)


def main(argv: list[str] | None = None) -> int:
    table = fit_table()
    dest = refit_models_dir(None, "python -m sim.calibration.alltoall_fit").joinpath(*FIT_FILE)
    dest.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(dest, index=False, lineterminator="\n")
    print(f"wrote {dest}")
    print(table.to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
