"""Check `sovsim throughput` (the full serving engine on the calibrated step model, committed
`trtllm` framework profile) against the dense TensorRT-LLM perf-overview throughput tables
(trtllm-bench; v0.14, v0.17, v1.0). The profile is fitted on v0.17 only; v0.14 and v1.0 rows
are held out (see results/calibration/throughput_trtllm_dense.md).

    PYTHONPATH=. python experiments/throughput_check.py [--quick] [--out FILE.csv]
    PYTHONPATH=. python experiments/throughput_check.py --fit    # = sovsim calibrate --throughput

Without --fit: one direct engine run per row with the committed profile, prints the error
summary per version (and writes --out if given). --fit refits the profile (3 runs per row,
closed-form fits, leave-one-version-out) and rewrites models/calibration/*.json and
results/calibration/throughput_trtllm_dense.{csv,md}. Engine settings for trtllm-bench
(assumption): max batch size 2048, max num tokens 8192, KV cache 95 % of GPU memory.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sim.calibration import throughput_fit as tf  # noqa: E402
from sim.core.errors import UserError  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="only ISL/OSL 128/128, 128/2048, 2048/128")
    ap.add_argument("--fit", action="store_true", help="refit the trtllm profile (sovsim calibrate --throughput)")
    ap.add_argument("--fit-version", default=tf.FIT_VERSION, help="with --fit: version fitted on")
    ap.add_argument("--out", default=None, help="CSV of the direct check (default: print only)")
    args = ap.parse_args(argv)
    if args.fit:
        tf.run_fit(args.fit_version, write=True, results_dir=ROOT / "results" / "calibration")
        return 0
    d = tf.cases()
    if args.quick:
        d = d[d.isl_tokens.isin([128, 2048]) & d.osl_tokens.isin([128, 2048])]
    t0 = time.perf_counter()
    pred, notes = [], []
    for r in d.itertuples(index=False):
        try:
            span_s, tokens = tf.makespan(r)
            pred.append(tokens / span_s)
            notes.append("")
        except UserError as e:
            pred.append(np.nan)
            notes.append(str(e))
    d = d.assign(predicted_tok_s=pred, note=notes, held_out=d.version != tf.FIT_VERSION)
    d["err"] = d.predicted_tok_s / d.measured_tok_s - 1.0
    print(f"{int(np.isfinite(d.err).sum())} of {len(d)} rows in {time.perf_counter() - t0:.0f} s")
    for v, g in d.groupby("version"):
        print(f"{v} ({'held out' if v != tf.FIT_VERSION else 'fitted on'}):")
        print("\n".join(tf.summary_lines(g, "err")))
    if args.out:
        pd.DataFrame(d).to_csv(args.out, index=False, float_format="%.6g")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
