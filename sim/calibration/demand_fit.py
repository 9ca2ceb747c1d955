"""``sovsim fit-demand``: re-fit the demand model from the traces in models/traces/.

Writes, in ``--models-out`` (default: the package's models/demand/):
  length_fits.json     per length source: every family's parameters and GOF, the AIC choice
  length_gof.csv       the goodness-of-fit table (one row per source x family)
  weekly_profiles.csv  168 hour-of-week multipliers (mean 1): the two fitted Azure bases and
                       the four vertical transformations
  burst.json           minute-level index of dispersion per Azure 2024 service, fitted MMPP
  FIT_SUMMARY.md       the headline numbers, generated
and in ``--results`` (default: results/demand_fit/) the same tables plus figures:
  lengths.png (fitted pmfs vs empirical), weekly_profile.png, dispersion.png,
  arrival_dispersion.csv (short-term burstiness of the per-request traces).
"""
from __future__ import annotations

import csv
import json
import math
import shutil
from datetime import datetime
from pathlib import Path

import numpy as np

from sim.calibration.outputs import refit_models_dir
from sim.core import progress as progress_mod
from sim.core.errors import UserError
from sim.core.resources import models_dir
from sim.demand import verticals as demand
from sim.demand.arrivals import MarkovBurst
from sim.demand.fitting import DiscretisedLength, PARAM_NAMES, best_by_aic, dispersion_curve, fit_all, fit_mmpp, interarrival_stats, mmpp_from_moments, mmpp_index
from sim.demand.traces import load_trace
from sim.demand.verticals import LENGTH_SOURCES, TRACE_NAMES

BURST_SHARE = 0.1  # assumption: share of time in the burst state (second-order fit cannot identify it)
DISPERSION_WINDOWS_MIN = (1, 2, 3, 5, 10)
TREND_S = 61 * 60.0  # centred moving-average trend over ~1 h removes the diurnal profile


def _write_csv(path: Path, rows: list[dict]) -> None:
    keys: list[str] = []
    for r in rows:
        for k in r:
            if k not in keys:
                keys.append(k)
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=keys, lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})


def fit_lengths(traces_dir: Path) -> tuple[dict, list[dict], dict]:
    fits, rows, data = {}, [], {}
    cache = {}
    for source, (rel, col) in LENGTH_SOURCES.items():
        path = traces_dir / rel
        if rel not in cache:
            cache[rel] = load_trace(path)
        x = getattr(cache[rel], col)
        data[source] = x
        res = fit_all(x)
        chosen = best_by_aic(res)
        fits[source] = {
            "trace": f"models/traces/{rel}", "column": col, "n": int(len(x)), "max_tokens": int(x.max()),
            "chosen": chosen, "chosen_by": "AIC (discrete likelihood)",
            "families": {f: {"params": list(r.params), "param_names": list(_names(f)), "aic": r.aic, "bic": r.bic,
                             "ks": r.ks, "chi2": r.chi2, "chi2_df": r.chi2_df, "chi2_p": r.chi2_p,
                             "mean_model": r.mean_model, "quantiles_model": r.quantiles_model}
                         for f, r in res.items()},
            "mean_data": float(x.mean()),
            "quantiles_data": next(iter(res.values())).quantiles_data,
        }
        for f, r in res.items():
            rows.append({"source": source, **r.row(), "chosen": f == chosen})
    return fits, rows, data


def _names(f):
    return PARAM_NAMES[f]


def fit_profiles(traces_dir: Path) -> tuple[dict[str, np.ndarray], dict, dict[str, np.ndarray]]:
    """Hour-of-week multipliers of both Azure 2024 services (Monday 00 UTC = hour 0), and
    their per-minute series in time order."""
    path = traces_dir / "azure_llm_2024" / "azure2024_requests_per_minute.csv"
    if not path.is_file():
        raise UserError(f"{path}: missing (Azure 2024 per-minute counts)")
    cols = {"azure-code": ("code_minute_start_utc", "code_requests"), "azure-conv": ("conv_minute_start_utc", "conv_requests")}
    series: dict[str, list[int]] = {k: [] for k in cols}
    starts: dict[str, datetime] = {}
    with path.open(newline="") as fh:
        for line, row in enumerate(csv.DictReader(fh), start=2):
            for k, (tc, cc) in cols.items():
                try:
                    series[k].append(int(row[cc]))
                    if k not in starts:
                        starts[k] = datetime.fromisoformat(row[tc].replace("Z", "+00:00"))
                except (KeyError, ValueError, TypeError):
                    raise UserError(f"{path}: line {line}: bad {cc} or {tc}") from None
    profiles, info, minutes = {}, {}, {}
    for k, s in series.items():
        c = np.asarray(s, dtype=np.float64)
        if len(c) != 10080:
            raise UserError(f"{path}: {k} has {len(c)} minutes, expected 10080 (one week)")
        st = starts[k]
        if st.minute or st.second:
            raise UserError(f"{path}: {k} does not start on the hour")
        hourly = c.reshape(168, 60).sum(axis=1)
        first_how = st.weekday() * 24 + st.hour
        how = (first_how + np.arange(168)) % 168
        prof = np.empty(168)
        prof[how] = hourly
        m = prof / prof.mean()
        profiles[k] = m
        minutes[k] = c
        weekday = np.arange(168) // 24 < 5
        info[k] = {"start_utc": st.isoformat(), "first_hour_of_week": int(first_how),
                   "mean_rate_per_s": float(c.sum() / (10080 * 60)),
                   "peak_trough_ratio": float(m.max() / m.min()),
                   "peak_hour_of_week": int(np.argmax(m)), "trough_hour_of_week": int(np.argmin(m)),
                   "weekend_weekday_ratio": float(m[~weekday].mean() / m[weekday].mean())}
    return profiles, info, minutes


def fit_bursts(minutes: dict[str, np.ndarray], info: dict) -> dict:
    out = {}
    for k, c in minutes.items():
        lam = info[k]["mean_rate_per_s"]
        curve = dispersion_curve(c, 60.0, DISPERSION_WINDOWS_MIN, TREND_S)
        v, s = fit_mmpp(curve, 60.0, lam)
        mult, mb, mg = mmpp_from_moments(v, s, BURST_SHARE)
        mm = MarkovBurst(mult, mb, mg)
        out[k] = {
            "mean_rate_per_s": lam,
            "index_of_dispersion": {f"{w}min": curve[w] for w in curve},
            "index_of_dispersion_note": "Var/mean of counts around a centred ~61-min moving average (w/(w-1) corrected); Poisson = 1",
            "relative_rate_variance": v, "switching_rate_per_s": s,
            "mmpp": {"multiplier": mult, "mean_burst_s": mb, "mean_gap_s": mg, "burst_share": BURST_SHARE,
                     "burst_share_source": "assumption (not identifiable from second-order statistics)"},
            "model_index_of_dispersion": {f"{w}min": mm.index_of_dispersion(lam, w * 60.0) for w in curve},
        }
    return out


def trace_dispersion(traces_dir: Path) -> list[dict]:
    rows = []
    for name, rel in TRACE_NAMES.items():
        t = load_trace(traces_dir / rel)
        ia = interarrival_stats(t.times_s)
        counts = np.bincount(np.floor(t.times_s).astype(np.int64))
        curve = dispersion_curve(counts, 1.0, (1, 10, 60), 901.0)
        for w, d in curve.items():
            rows.append({"trace": name, "window_s": w, "index_of_dispersion": d, "interarrival_cv2": ia["cv2"],
                         "zero_gap_share": ia["zero_gap_share"], "mean_rate_per_s": len(t) / max(t.span_s, 1e-9)})
    return rows


def fit_demand(traces: Path | None = None, models_out: Path | None = None,
               results: Path = Path("results/demand_fit"), figures: bool = True,
               progress=None) -> tuple[str, Path, Path]:
    """Refit lengths, weekly profiles and burstiness; write the tables and figures. Returns
    (the summary text, the models folder written, the results folder written).  ``models_out``
    defaults to the checkout's models/demand (:func:`sim.calibration.outputs.refit_models_dir`:
    never site-packages); ``progress`` (:mod:`sim.core.progress`) counts the stages."""
    traces_dir = traces or (models_dir() / "traces")
    out = models_out or (refit_models_dir(None, "fit-demand") / "demand")
    res = results
    if not traces_dir.is_dir():
        raise UserError(f"--traces: {traces_dir} is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    res.mkdir(parents=True, exist_ok=True)

    bar = progress_mod.start(progress, 5, "stage", "fit-demand")
    bar.note("length laws")
    fits, gof_rows, data = fit_lengths(traces_dir)
    bar.update(1)
    bar.note("weekly profiles")
    profiles, pinfo, minutes = fit_profiles(traces_dir)
    bar.update(1)
    bar.note("bursts")
    bursts = fit_bursts(minutes, pinfo)
    for k in bursts:
        bursts[k]["profile"] = pinfo[k]
    tdisp = trace_dispersion(traces_dir)
    bar.update(1)
    bar.note("writing")

    (out / demand.FITS_FILE).write_text(json.dumps(fits, indent=1) + "\n")
    _write_csv(out / "length_gof.csv", gof_rows)
    (out / demand.BURST_FILE).write_text(json.dumps(bursts, indent=1) + "\n")
    prof_rows = []
    vert = {name: v.profile.apply(profiles[v.profile.base]) for name, v in demand.VERTICALS.items()}
    days = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
    for h in range(168):
        r = {"hour_of_week": h, "day": days[h // 24], "hour_utc": h % 24}
        r.update({k: float(profiles[k][h]) for k in profiles})
        r.update({k: float(vert[k][h]) for k in vert})
        prof_rows.append(r)
    _write_csv(out / demand.PROFILES_FILE, prof_rows)
    summary = _summary(fits, pinfo, bursts, tdisp, vert)
    (out / "FIT_SUMMARY.md").write_text(summary)
    for f in ("length_gof.csv", demand.PROFILES_FILE, demand.BURST_FILE, "FIT_SUMMARY.md"):
        shutil.copyfile(out / f, res / f)
    _write_csv(res / "arrival_dispersion.csv", tdisp)
    # the in-process caches would hold the previous tables
    for fn in (demand._fits, demand._base_profiles, demand._bursts):
        fn.cache_clear()
    bar.update(1)
    if figures:
        bar.note("figures")
        _figures(res, fits, data, profiles, vert, bursts, minutes)
    bar.update(1)
    bar.close()
    return summary, out, res


def _summary(fits, pinfo, bursts, tdisp, vert) -> str:
    L = ["# Demand fit: headline numbers (generated by `sovsim fit-demand`)", "",
         "## Token lengths (discrete MLE; chosen by AIC)", "",
         "| source | n | chosen | parameters | KS | data mean / p50 / p99 | model mean / p50 / p99 |",
         "|---|---|---|---|---|---|---|"]
    for s, f in fits.items():
        c = f["families"][f["chosen"]]
        par = ", ".join(f"{n}={v:.4g}" for n, v in zip(c["param_names"], c["params"]))
        qd, qm = f["quantiles_data"], c["quantiles_model"]
        L.append(f"| {s} | {f['n']} | {f['chosen']} | {par} | {c['ks']:.3f} | {f['mean_data']:.0f} / {qd['50'] if '50' in qd else qd[50]} / "
                 f"{qd['99'] if '99' in qd else qd[99]} | {c['mean_model']:.0f} / {qm['50'] if '50' in qm else qm[50]} / {qm['99'] if '99' in qm else qm[99]} |")
    L += ["", "Smallest KS per source (any family): " + "; ".join(
        f"{s} {min(f['families'], key=lambda k: f['families'][k]['ks'])} {min(v['ks'] for v in f['families'].values()):.3f}"
        for s, f in fits.items()), "",
        "## Weekly profile (Azure 2024, hour-of-week, UTC)", "",
        "| service | mean req/s | peak/trough (hourly) | peak hour-of-week | trough hour-of-week | weekend/weekday |",
        "|---|---|---|---|---|---|"]
    for k, i in pinfo.items():
        L.append(f"| {k} | {i['mean_rate_per_s']:.1f} | {i['peak_trough_ratio']:.1f} | {i['peak_hour_of_week']} | "
                 f"{i['trough_hour_of_week']} | {i['weekend_weekday_ratio']:.2f} |")
    L += ["", "Vertical profiles (peak/trough): " + "; ".join(f"{k} {v.max() / v.min():.1f}" for k, v in vert.items()), "",
          "## Minute-level dispersion (Azure 2024; Poisson = 1)", "",
          "| service | " + " | ".join(f"IDC {w} min" for w in DISPERSION_WINDOWS_MIN) + " | MMPP multiplier | mean burst s | mean gap s |",
          "|---|" + "---|" * (len(DISPERSION_WINDOWS_MIN) + 3)]
    for k, b in bursts.items():
        idc = " | ".join(f"{b['index_of_dispersion'][f'{w}min']:.1f} (fit {b['model_index_of_dispersion'][f'{w}min']:.1f})"
                         for w in DISPERSION_WINDOWS_MIN)
        m = b["mmpp"]
        L.append(f"| {k} | {idc} | {m['multiplier']:.3f} | {m['mean_burst_s']:.0f} | {m['mean_gap_s']:.0f} |")
    L += ["", f"MMPP burst share {BURST_SHARE} is an assumption; multiplier and durations follow from the fitted "
          "relative rate variance and switching rate.", "",
          "## Short-term burstiness of the per-request traces (~1 h each)", "",
          "| trace | window s | IDC | inter-arrival CV^2 | zero-gap share |", "|---|---|---|---|---|"]
    for r in tdisp:
        L.append(f"| {r['trace']} | {r['window_s']} | {r['index_of_dispersion']:.2f} | {r['interarrival_cv2']:.2f} | {r['zero_gap_share']:.3f} |")
    return "\n".join(L) + "\n"


def _figures(res, fits, data, profiles, vert, bursts, minutes) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    srcs = list(fits)
    fig, axes = plt.subplots(3, 2, figsize=(11, 11))
    for ax, s in zip(axes.ravel(), srcs):
        x = data[s]
        kmax = int(x.max())
        edges = np.unique(np.round(np.logspace(0, math.log10(kmax + 1), 50)).astype(int))
        edges = np.r_[edges, kmax + 1] if edges[-1] <= kmax else edges
        hist, _ = np.histogram(x, bins=edges)
        w = np.diff(edges)
        ax.step(edges[:-1], hist / len(x) / w, where="post", color="k", lw=1.5, label=f"empirical (n={len(x)})")
        for fam, f in fits[s]["families"].items():
            d = DiscretisedLength(fam, tuple(f["params"]), kmax)
            pmf = d.pmf()
            mass = np.add.reduceat(pmf, edges[:-1] - 1)[: len(edges) - 1]
            lab = f"{fam} KS={f['ks']:.3f}" + (" (AIC best)" if fam == fits[s]["chosen"] else "")
            ax.step(edges[:-1], mass / w, where="post", lw=1, label=lab)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(s)
        ax.set_xlabel("tokens")
        ax.set_ylabel("probability per token")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(res / "lengths.png", dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(12, 4.5))
    h = np.arange(168)
    for k, m in profiles.items():
        ax.step(h, m, where="post", lw=2, label=f"{k} (fitted, peak/trough {m.max() / m.min():.1f})")
    for k, m in vert.items():
        ax.step(h, m, where="post", lw=1, ls="--", label=f"vertical {k} (transformation)")
    for d in range(1, 7):
        ax.axvline(24 * d, color="0.8", lw=0.5)
    ax.set_xticks(np.arange(12, 168, 24), ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"])
    ax.set_ylabel("rate multiplier (mean 1)")
    ax.set_xlabel("hour of week (UTC)")
    ax.set_title("Weekly arrival-rate profiles: Azure LLM inference 2024 and the vertical transformations")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(res / "weekly_profile.png", dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for i, (k, b) in enumerate(bursts.items()):
        ws = np.array(DISPERSION_WINDOWS_MIN)
        ax.plot(ws, [b["index_of_dispersion"][f"{w}min"] for w in ws], "o", color=f"C{i}", label=f"{k} measured")
        tt = np.linspace(0.5, ws.max(), 100)
        ax.plot(tt, mmpp_index(tt * 60.0, b["mean_rate_per_s"], b["relative_rate_variance"], b["switching_rate_per_s"]),
                "-", color=f"C{i}", label=f"{k} MMPP fit")
    ax.axhline(1.0, color="k", ls=":", label="Poisson")
    ax.set_yscale("log")
    ax.set_xlabel("window (minutes)")
    ax.set_ylabel("index of dispersion Var/mean")
    ax.set_title("Azure 2024: counts around a 1-h trend vs Poisson")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(res / "dispersion.png", dpi=110)
    plt.close(fig)
