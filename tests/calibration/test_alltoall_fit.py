"""The NVLink all-to-all fit (``sim.calibration.alltoall_fit``): it recovers a known model, it
predicts held-out message sizes of the apex_plus tables within measured bounds, and the
committed ``models/calibration/alltoall_fit.csv`` is what the code produces."""
import numpy as np
import pandas as pd
import pytest

from sim.calibration import alltoall_fit as a
from sim.core.resources import model_file

SIZES_KB = [0] + [2 ** i for i in range(18)]          # the tables' sizes: 0, 1 KiB .. 128 MiB
TRUE = {2: (7e-6, 450e9), 4: (10e-6, 350e9), 8: (14e-6, 300e9)}   # latency_s, algbw bytes/s

# Held-out MdAPE (%) measured with this fit (fit on even-indexed sizes, scored on odd ones),
# as written to models/calibration/alltoall_fit.csv on 2026-12, plus about two percentage points:
#   h100-sxm g=2 15.7, g=4 6.7, g=8 1.9;  h200 g=2 7.9, g=4 4.4, g=8 3.5.
# The error is the alpha-beta model's shape, not noise: NCCL's protocol switches (LL -> LL128 ->
# Simple) make the measured curve bend between 16 KiB and 8 MiB (the model is up to 40 % high
# at 1-4 KiB and 10-25 % low at 128 KiB-2 MiB for 2 GPUs), and the bandwidth is still rising
# at 128 MiB (the model is 12-25 % high there).  8 GPUs, the EP case that matters most, fits
# within a few %.  The tables are fixed data and the fit is deterministic, so a bound this tight
# fails when the model, the row selection or the fitting changes for the worse (checked below:
# a latency off by 2x fails every bound).
HELDOUT_MDAPE_BOUND_PCT = {("h100-sxm", 2): 18.0, ("h100-sxm", 4): 9.0, ("h100-sxm", 8): 4.0,
                           ("h200", 2): 10.0, ("h200", 4): 7.0, ("h200", 8): 6.0}
HELDOUT_BIAS_BOUND_PCT = 6.0   # measured |signed median| at most 4.9 % (h200 g=2)
# Held-out MdAPE on the bandwidth-bound sizes (>= 1 MiB): measured h100-sxm 6.5 / 5.9 / 3.8,
# h200 13.3 / 13.4 / 8.2 % (g = 2 / 4 / 8); one bound for all, above the largest.
LARGE_MDAPE_BOUND_PCT = 15.0


def _synthetic_table(noise_sd: float = 0.0, seed: int = 0) -> pd.DataFrame:
    """A table laid out as apex_plus's, with times from the model itself (not truncated)."""
    rng = np.random.default_rng(seed)
    rows = []
    for g, (lat, bw) in TRUE.items():
        for kb in SIZES_KB:
            t = lat + kb * a.BYTES_PER_KB / bw
            rows.append({"gpu": "SYNTH", "num_nodes": 1, "num_gpus_per_node": g, "dtype": "half",
                         "size(kb)": kb, "time(us)": t * 1e6 * float(np.exp(rng.normal(0.0, noise_sd)))})
            # fp32 rows with wild times, as the H100 table has: the fit must ignore them
            rows.append({"gpu": "SYNTH", "num_nodes": 1, "num_gpus_per_node": g, "dtype": "float",
                         "size(kb)": kb, "time(us)": 1900.0})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("noise_sd", [0.0, 0.003])
def test_fit_recovers_known_latency_and_bandwidth(monkeypatch, noise_sd):
    monkeypatch.setattr(a, "load_alltoall", lambda gpu_id: _synthetic_table(noise_sd))
    fit = a.fit_alltoall("synthetic")
    assert sorted(fit) == sorted(TRUE)
    for g, (lat, bw) in TRUE.items():
        assert fit[g]["latency_s"] == pytest.approx(lat, rel=0.01)
        assert fit[g]["algbw_gb_s"] == pytest.approx(bw / 1e9, rel=0.01)
        assert fit[g]["points"] == len(SIZES_KB) - 1          # size 0 dropped, fp32 rows ignored
        assert fit[g]["heldout_mdape_pct"] < 1.0
        assert abs(fit[g]["heldout_bias_pct"]) < 1.0


def test_size_convention_is_per_rank_send_buffer_in_kib():
    d = a.load_alltoall("h100-sxm")
    r = a.fit_rows("h100-sxm")
    half = d[(d["dtype"] == "half") & (d["size(kb)"] > 0)]
    assert sorted(r.bytes_per_rank.unique()) == sorted((half["size(kb)"] * 1024.0).unique())
    assert r.bytes_per_rank.max() == 128 * 2 ** 20                # 2**26 fp16 elements per rank


@pytest.fixture(scope="module")
def fits():
    return {gpu: a.fit_alltoall(gpu) for gpu in a.SOURCES}


@pytest.mark.parametrize("gpu,g", sorted(HELDOUT_MDAPE_BOUND_PCT))
def test_heldout_error_on_the_real_tables(fits, gpu, g):
    f = fits[gpu][g]
    assert f["points"] == 18
    assert f["heldout_mdape_pct"] < HELDOUT_MDAPE_BOUND_PCT[(gpu, g)]
    assert abs(f["heldout_bias_pct"]) < HELDOUT_BIAS_BOUND_PCT


def _heldout(gpu: str, g: int):
    """The odd-indexed sizes and the fit on the even-indexed ones (as fit_alltoall does)."""
    d = a.fit_rows(gpu)
    d = d[d.gpus == g]
    even, odd = d.iloc[0::2], d.iloc[1::2]
    return odd, a.fit_latency_bw(even.bytes_per_rank, even.time_s)


def _mdape_pct(rows, latency_s, algbw_bytes_s) -> float:
    err = a.alltoall_time_s(rows.bytes_per_rank, latency_s, algbw_bytes_s) / rows.time_s.to_numpy() - 1.0
    return float(np.median(np.abs(err)) * 100)


@pytest.mark.parametrize("gpu,g", sorted(HELDOUT_MDAPE_BOUND_PCT))
def test_heldout_error_where_bandwidth_dominates(gpu, g):
    """Half the sizes are latency-bound, so the all-sizes MdAPE says little about the bandwidth:
    the held-out sizes >= 1 MiB (2, 8, 32, 128 MiB) are judged on their own."""
    odd, (lat, bw) = _heldout(gpu, g)
    big = odd[odd.bytes_per_rank >= 2 ** 20]
    assert len(big) == 4
    assert _mdape_pct(big, lat, bw) < LARGE_MDAPE_BOUND_PCT


@pytest.mark.parametrize("gpu,g", sorted(HELDOUT_MDAPE_BOUND_PCT))
def test_the_bounds_can_fail(gpu, g):
    """A latency off by 2x breaks the all-sizes bound; a bandwidth off by 2x (e.g. the per-rank /
    total size convention confused for 2 GPUs) breaks the large-size bound."""
    odd, (lat, bw) = _heldout(gpu, g)
    big = odd[odd.bytes_per_rank >= 2 ** 20]
    assert _mdape_pct(odd, lat, bw) < HELDOUT_MDAPE_BOUND_PCT[(gpu, g)]
    for factor in (0.5, 2.0):
        assert _mdape_pct(odd, lat * factor, bw) > HELDOUT_MDAPE_BOUND_PCT[(gpu, g)]
        assert _mdape_pct(big, lat, bw * factor) > LARGE_MDAPE_BOUND_PCT


def test_bus_bandwidth_is_physical(fits):
    """busbw = algbw * (g-1)/g must stay below one direction of the GPU's NVLink (half the
    bidirectional figure of models/gpus.csv).  Reading size(kb) as the chunk sent to EACH peer
    would multiply algbw by g and break this for 8 GPUs (2,300+ GB/s)."""
    cards = pd.read_csv(model_file("gpus.csv")).set_index("id")
    for gpu, per_g in fits.items():
        one_way_gb_s = float(cards.loc[gpu, "nvlink_bandwidth_gb_s"]) / 2
        for g, f in per_g.items():
            assert 0.3 * one_way_gb_s < f["algbw_gb_s"] * (g - 1) / g < one_way_gb_s
            assert 5e-6 < f["latency_s"] < 20e-6


def test_committed_fit_csv_is_current(fits):
    committed = pd.read_csv(model_file(*a.FIT_FILE))
    fresh = a.fit_table()
    assert list(committed.columns) == a.COLUMNS
    assert len(committed) == len(fresh) == 6
    for col in ("gpu", "gpus", "points", "source"):
        assert committed[col].tolist() == fresh[col].tolist(), col
    for col in ("latency_s", "algbw_gb_s", "heldout_mdape_pct", "heldout_bias_pct"):
        np.testing.assert_allclose(committed[col].to_numpy(), fresh[col].to_numpy(), rtol=1e-6, err_msg=col)
    for _, row in committed.iterrows():   # the table is the fit_alltoall result, row by row
        f = fits[row.gpu][row.gpus]
        assert row.latency_s == pytest.approx(f["latency_s"], rel=1e-6)
        assert row.algbw_gb_s == pytest.approx(f["algbw_gb_s"], rel=1e-6)
