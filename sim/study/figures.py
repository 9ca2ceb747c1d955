"""Figures every run writes next to its summary, labelled from :mod:`sim.study.glossary`.

The load a figure shows is request utilisation (requests completed / what the fleet could
complete at full batch) with throughput utilisation beside it; the busy share (time with any
request in flight) is drawn only as a thin grey line, named as what it is.  ``CAPTIONS``
states what each figure shows; the HTML report prints it under the figure.
"""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402

from sim.study.glossary import CAPTIONS, axis_label, caption, label  # noqa: E402,F401  (CAPTIONS, caption: re-exported)
from sim.study.warnings import sla_targets  # noqa: E402

def _load_per_bin(ts, summary):
    """Fleet request and throughput utilisation per time bin (GPU-weighted: each bin's
    completions and output tokens over the capacity of the GPUs in the fleet then)."""
    fleet = ts[ts["replica"] == "__fleet__"].sort_values("bin_start_s")
    reps = ts[ts["replica"] != "__fleet__"]
    gpu_s = (summary.get("gpu_hours") or 0.0) * 3600.0
    ru, done = summary.get("request_utilisation"), summary.get("completed") or 0
    if not len(fleet) or gpu_s <= 0:
        return None
    starts = fleet["bin_start_s"].to_numpy(dtype=float)
    ends = np.append(starts[1:], max(summary.get("duration_s") or 0.0, starts[-1]))
    width = np.where(ends > starts, ends - starts, np.nan)   # the last bin may be partial
    gpu_bin_s = fleet["gpus_in_fleet"].to_numpy(dtype=float) * width
    x = fleet["bin_start_s"].to_numpy() / 3600
    out = {"x": x}
    if ru and done:
        cap_per_gpu_s = done / (ru * gpu_s)
        out["request_utilisation"] = fleet["completions"].to_numpy(dtype=float) / np.maximum(cap_per_gpu_s * gpu_bin_s, 1e-12)
    sat = sum((d.get("saturation_output_tokens") or 0.0) for d in (summary.get("deployments") or {}).values())
    if sat > 0 and len(reps):
        tok = reps.groupby("bin_start_s")["output_tokens"].sum().reindex(fleet["bin_start_s"]).to_numpy(dtype=float)
        out["throughput_utilisation"] = tok / np.maximum(sat / gpu_s * gpu_bin_s, 1e-12)
    return out


def run_figures(result) -> list[str]:
    out = result.out_dir
    files = []
    ts = result.timeseries
    req = result.requests
    s = result.summary
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    ax = axes[0]
    load = _load_per_bin(ts, s)
    if load is not None:
        for key in ("request_utilisation", "throughput_utilisation"):
            if key in load:
                ax.plot(load["x"], load[key], label=label(key), lw=1.6 if key == "request_utilisation" else 1.0)
    reps = ts[ts["replica"] != "__fleet__"]
    if len(reps):
        util = reps.groupby("bin_start_s")["utilisation"].mean()
        kv = reps.groupby("bin_start_s")["kv_occupancy"].mean()
        ax.plot(kv.index / 3600, kv.values, label="KV-cache occupancy (mean over replicas)", lw=1.0)
        ax.plot(util.index / 3600, util.values, ls=":", color="0.55", lw=1.0,
                label="busy share (any request in flight; not a load measure)")
    ax.set_xlabel("simulated time (h)")
    ax.set_ylabel("share of fleet capacity (0-1)")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=7, loc="center right")
    ru = s.get("request_utilisation")
    ax.set_title("Load" + (f": request utilisation {ru * 100:.1f} %" if ru is not None else ""))
    done = req[req["outcome"] == "completed"]
    for ax, col, target_key, name in ((axes[1], "ttft_s", "ttft_target_s", "TTFT"),
                                      (axes[2], "tpot_s", "tpot_target_s", "TPOT")):
        for wname, g in done.groupby("workload"):
            v = np.sort(g[col].dropna().to_numpy())
            if len(v):
                ax.plot(v, np.arange(1, len(v) + 1) / len(v), label=str(wname))
                tgt = s["workloads"].get(wname, {}).get(target_key)
                if tgt:
                    ax.axvline(tgt, ls="--", lw=0.8, color=ax.lines[-1].get_color())
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())   # no overlapping minor labels
        ax.set_xlabel(f"{axis_label(col)}, log scale; dashed: SLA target")
        ax.set_ylabel("share of requests at or below (CDF)")
        ax.set_title(f"{label(col)}: " + ("time to first token" if col == "ttft_s" else "time per output token"))
        if ax.lines:
            ax.legend(fontsize=8, loc="lower right")
    fig.suptitle(f"{s['scenario']} (seed {result.seed})")
    fig.tight_layout()
    fig.savefig(out / "overview.png", dpi=110)
    plt.close(fig)
    files.append("overview.png")
    return files


def sla_target_of(scenario) -> float:
    """The attainment target the forecast figure draws: the strictest of the forecast's tenants'
    (the market's verticals), the one the forecast's warnings compare the months with
    (:func:`sim.study.warnings.sla_targets`)."""
    return sla_targets(scenario)[0]


def forecast_figure(result) -> list[str]:
    """``forecast.png`` of a ``ForecastResult`` (monthly table), every axis labelled, the SLA
    panel with its target line; the load shown is request utilisation when the monthly
    table has it (the busy share is not drawn as a load)."""
    df = result.monthly
    fig, axes = plt.subplots(2, 2, figsize=(12, 8))
    ax = axes[0, 0]
    ax.plot(df["month"], df["revenue_eur"] / 1e3, label=label("revenue_eur"))
    ax.plot(df["month"], df["cost_eur"] / 1e3, label=label("cost_eur"))
    ax.plot(df["month"], df["gross_margin_eur"] / 1e3, label=label("gross_margin_eur"))
    ax.axhline(0, color="k", lw=0.5)
    ax.set_ylabel("thousand EUR per month")
    ax.legend()
    ax.set_title("Money")
    ax = axes[0, 1]
    ax.plot(df["month"], df["sla_attainment"], label=label("sla_attainment"))
    target = sla_target_of(result.scenario)
    ax.axhline(target, ls="--", color="C3", lw=1.0, label=f"SLA target ({target * 100:.0f} %)")
    if "request_utilisation" in df.columns:
        ax.plot(df["month"], df["request_utilisation"], label=label("request_utilisation"))
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("share (0-1)")
    ax.legend(fontsize=8, loc="lower left")
    ax.set_title("Service and load" if "request_utilisation" in df.columns else "Service")
    ax = axes[1, 0]
    ax.plot(df["month"], df["contracts_active"], label="active")
    ax.bar(df["month"], df["contracts_won"], alpha=0.5, label="won")
    ax.bar(df["month"], -df["contracts_lost"], alpha=0.5, label="lost (RFPs, drawn below 0)")
    ax.set_ylabel("sovereign contracts")
    ax.set_title("Contracts")
    ax.legend(fontsize=8)
    ax = axes[1, 1]
    ax.plot(df["month"], df["share"], label="sovereign share of contracted demand")
    ax.set_ylim(0, 1)
    ax.set_ylabel(axis_label("share").replace(" (%)", " (0-1)"))
    ax.set_title("Market share")
    for a in axes.flat:
        a.set_xlabel("month")
        a.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    fig.suptitle(f"{result.summary['scenario']}: {len(df)}-month forecast (seed {result.seed})")
    fig.tight_layout()
    fig.savefig(result.out_dir / "forecast.png", dpi=110, metadata={"Software": None})
    plt.close(fig)
    return ["forecast.png"]
