"""Figures every run writes next to its summary."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def run_figures(result) -> list[str]:
    out = result.out_dir
    files = []
    ts = result.timeseries
    req = result.requests
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    ax = axes[0]
    reps = ts[ts["replica"] != "__fleet__"]
    if len(reps):
        util = reps.groupby("bin_start_s")["utilisation"].mean()
        kv = reps.groupby("bin_start_s")["kv_occupancy"].mean()
        ax.plot(util.index / 3600, util.values, label="busy share")
        ax.plot(kv.index / 3600, kv.values, label="KV occupancy")
    ax.set_xlabel("simulated time (h)")
    ax.set_ylabel("mean over replicas")
    ax.set_ylim(0, 1.05)
    ax.legend()
    ax.set_title("Replica utilisation")
    done = req[req["outcome"] == "completed"]
    for ax, col, target_key, label in ((axes[1], "ttft_s", "ttft_target_s", "TTFT"),
                                       (axes[2], "tpot_s", "tpot_target_s", "TPOT")):
        for wname, g in done.groupby("workload"):
            v = np.sort(g[col].dropna().to_numpy())
            if len(v):
                ax.plot(v, np.arange(1, len(v) + 1) / len(v), label=str(wname))
                tgt = result.summary["workloads"].get(wname, {}).get(target_key)
                if tgt:
                    ax.axvline(tgt, ls="--", lw=0.8, color=ax.lines[-1].get_color())
        ax.set_xscale("log")
        ax.set_xlabel(f"{label} (s), dashed: SLA target")
        ax.set_ylabel("CDF (request sample)")
        ax.set_title(f"{label} distribution")
        if ax.lines:
            ax.legend(fontsize=8)
    fig.suptitle(f"{result.summary['scenario']} (seed {result.seed})")
    fig.tight_layout()
    fig.savefig(out / "overview.png", dpi=110)
    plt.close(fig)
    files.append("overview.png")
    return files
