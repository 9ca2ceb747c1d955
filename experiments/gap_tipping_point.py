"""Gap tipping point: how fast may the hyperscalers close the sovereignty gap before the
36-month cumulative gross margin turns negative, with the fleet following demand?

**Gap-closing speed.**  The market (sim/market/market.py, ``Market.utilities``) adds
``beta_sovereignty(v) x fit(c, v, month)`` to each offer's utility in vertical ``v``; the
sovereign provider's fit is 1 (normalisation), a hyperscaler's follows a logistic curve
``fit(t) = fit_start + (fit_end - fit_start) / (1 + exp(-(t - midpoint_month) / width_months))``
(``SovereigntyCurve.fit``, sim/scenario/market.py; rows ``competitor, <name>,
sovereignty.<vertical>.*`` of models/market/parameters.csv).  The gap of competitor ``c`` in
``v`` at month ``t`` is ``1 - fit(t)``.  A gap-closing speed ``s`` compresses the curve in
time, ``fit_s(t) = fit(s t)``: ``midpoint_month / s`` and ``width_months / s``, with
``fit_start`` and ``fit_end`` (how far the gap closes, a different question: see the
tornado) unchanged.  ``s = 1`` is the table; ``s = 2`` closes every step twice as early;
``s = 0`` freezes the gap at its month-0 value ("never"); ``s = inf`` closes it to
``fit_end`` at month 0 ("closed").  Only hyperscalers have a gap to close (the EU
competitor's curve is constant).

**Plausible range: 0.5 <= s <= 2.**  The table's low/high ends of the curves are exactly half
and twice the defaults: midpoint_month aws 12-48 around 24, azure 9-36 around 18;
width_months 3-12 around 6 (parameters.csv, all ``assumption``).  Context: Microsoft's EU
Data Boundary took two years from its first phase to completion (2023-01 to 2025-02,
models/market/market.csv), the order of the curves' 10 %-90 % move (4.4 x 6 = 26 months).
The search runs over the whole axis, never ... closed.

**Targets** (``--targets``): ``all`` (every hyperscaler in every vertical), one competitor in
every vertical (``aws``, ``azure``), one vertical for every hyperscaler (``finance``,
``healthcare``, ``public_sector``), or one pair (``aws:finance``).

**Forecast.**  The 16-GPU ``small`` scenario's market, traffic windows and ledger (``WINDOWS``:
2 windows of 30 s after 10 s of warm-up per month instead of 12 of 80 s, as
experiments/channels.py; not shorter: a window loses the tokens of requests still in flight at
its end), with the fleet adapting under the threshold
capacity policy (``POLICY``, sim/forecast/fleet.py ``PolicyFleet``): every site starts with
one Mixtral TP2 replica (2 GPUs) and orders or releases 2-GPU tranches on its own first
contract's terms (par-1 and fra-1: committed rental, 12-month minimum term; ams-1: partner
reserved, monthly) when last month's request utilisation is above 0.2 or below 0.05 -- the
thresholds of the packaged provider scenario (sim/scenarios/provider.toml: the busiest hour
is ~3x the monthly mean) -- and orders once after a month whose SLA attainment fell under the
tenants' target.  So a faster gap costs revenue and saves GPUs, unlike a fixed fleet.

**Search** (sim/study/crossing.py): each target's grid (``GRID_ALL``, ``GRID_TARGET``; speed 1
is one shared cell), ``--replications`` seeds per cell, the same seeds in every cell (common
random numbers), then up to ``--bisect-steps`` geometric midpoints of the first bracket whose
mean cumulative margin changes sign.  Per cell: the mean with a 95 % t interval, and the
change against speed 1 paired by seed.

Writes ``results/gap_tipping_point/``: ``gap_tipping_point.png`` (per target: margin vs speed,
95 % band, the zero line, the plausible range, the crossing or the statement that there is
none), ``gap_tipping_point_cells.csv`` (every cell), ``gap_tipping_point_runs.csv`` (every
forecast), ``gap_tipping_point_crossings.csv`` (per target: status, estimate, bracket,
interval bounds) and ``report.html``.

Run:  python experiments/gap_tipping_point.py [--quick] [--replications N] [--workers N]
"""
from __future__ import annotations

import math
import time

import _common  # noqa: F401  (puts the project root on sys.path, sets the Agg backend)
from _common import executor, main_wrapper, out_dir, parser, save_png, write_csv, write_report

REPLICATIONS = 5
MONTHS = 36
WINDOWS = {"forecast.windows_per_month": 2, "forecast.window_s": 30.0, "forecast.warmup_s": 10.0}
START_GPUS = 2           # per site: one Mixtral TP2 replica
POLICY = {"kind": "threshold", "high_utilisation": 0.2, "low_utilisation": 0.05, "step_gpus": 2,
          "min_gpus": START_GPUS}
INF = math.inf
GRID_ALL = (0.0, 0.5, 1.0, 2.0, 4.0, 8.0, INF)
GRID_TARGET = (1.0, 2.0, 8.0, INF)
PLAUSIBLE = (0.5, 2.0)
TARGETS = ("all", "aws", "azure", "finance", "healthcare", "public_sector")
BISECT_STEPS = 3
RUN_COLUMNS = ("cum_margin_eur", "cum_revenue_eur", "cum_cost_eur", "cum_sla_credits_eur", "final_share",
               "gpus_end", "gpus_mean", "request_utilisation_mean", "sla_attainment_mean", "contracts_active_end")


# ------------------------------------------------------------------ the speed transform
def with_gap_speed(spec, speed: float, competitors=None, verticals=None):
    """``spec`` (a MarketSpec) with the sovereignty curves of the hyperscalers in
    ``competitors`` (None: all) and ``verticals`` (None: all) run ``speed`` times faster:
    ``fit_s(t) = fit(speed t)``; 0 freezes them at their month-0 fit, inf closes them to
    ``fit_end`` at month 0; 1 returns ``spec`` itself."""
    from sim.scenario.market import MarketSpec

    if speed == 1.0:
        return spec
    if not speed >= 0.0:
        raise ValueError(f"gap speed {speed}: must be >= 0")
    d = spec.model_dump(mode="python")
    for c in d["competitors"]:
        if c["kind"] != "hyperscaler" or (competitors is not None and c["name"] not in competitors):
            continue
        for v, cu in c["sovereignty"].items():
            if verticals is not None and v not in verticals:
                continue
            if speed == 0.0:
                z = max(-60.0, min(60.0, cu["midpoint_month"] / cu["width_months"]))
                cu["fit_start"] = cu["fit_end"] = cu["fit_start"] + (cu["fit_end"] - cu["fit_start"]) / (1.0 + math.exp(z))
            elif math.isinf(speed):
                cu["fit_start"] = cu["fit_end"]
            else:
                cu["midpoint_month"] = cu["midpoint_month"] / speed
                cu["width_months"] = cu["width_months"] / speed
    return MarketSpec.model_validate(d)


def parse_target(target: str, spec) -> tuple[set | None, set | None]:
    """(competitors, verticals) a target moves; a bad name is a UserError."""
    from sim.core.errors import UserError

    hyper = [c.name for c in spec.competitors if c.kind == "hyperscaler"]
    verts = [v.name for v in spec.verticals]
    if target == "all":
        return None, None
    comp, _, vert = target.partition(":")
    if vert:
        if comp not in hyper or vert not in verts:
            raise UserError(f"--targets {target}: COMPETITOR:VERTICAL needs a hyperscaler of {hyper} and a vertical of {verts}")
        return {comp}, {vert}
    if comp in hyper:
        return {comp}, None
    if comp in verts:
        return None, {comp}
    raise UserError(f"--targets {target}: not 'all', a hyperscaler ({', '.join(hyper)}), a vertical "
                    f"({', '.join(verts)}) or COMPETITOR:VERTICAL")


def base_scenario(months: int, sets: tuple = ()):
    """The small scenario: ``START_GPUS`` per site, the threshold policy, fewer windows."""
    from sim.scenario import load_scenario, scenario_from_dict
    from sim.study.sweep import apply_sets

    d = load_scenario("small").model_dump(mode="python")
    for s in d["sites"]:
        s["contracts"][0]["gpus"] = START_GPUS
        s["contracts"] = s["contracts"][:1]
    for dep in d["deployments"]:
        dep["replicas"] = START_GPUS // dep["tp"]
    d["capacity_policy"] = dict(d["capacity_policy"], **POLICY)
    d["forecast"] = dict(d["forecast"], months=months, **{k.split(".")[1]: v for k, v in WINDOWS.items()})
    d["name"] = "gap_tipping_point"
    sc = scenario_from_dict(d, "gap_tipping_point")
    return apply_sets(sc, list(sets)) if sets else sc


def scenario_for(target: str, speed: float, months: int, sets: tuple = ()):
    from sim.scenario import scenario_from_dict

    base = base_scenario(months, sets)
    comps, verts = parse_target(target, base.market)
    spec = with_gap_speed(base.market, speed, comps, verts)
    if spec is base.market:
        return base
    d = base.model_dump(mode="python")
    d["market"] = spec.model_dump(mode="python")
    return scenario_from_dict(d, "gap_tipping_point")


def cell_key(target: str, speed: float) -> tuple[str, float]:
    """Speed 1 is the same forecast for every target: one shared cell."""
    return ("table", 1.0) if speed == 1.0 else (target, speed)


def one(task) -> dict:
    """One forecast: (target, speed, seed, months, sets) -> its per-run outcomes."""
    from sim.forecast.forecast import simulate_forecast

    target, speed, seed, months, sets = task
    m = simulate_forecast(scenario_for(target, speed, months, sets), seed).monthly
    tail = m.tail(min(12, len(m)))
    return {"target": target, "speed": speed, "seed": seed,
            "cum_margin_eur": float(m["gross_margin_eur"].sum()), "cum_revenue_eur": float(m["revenue_eur"].sum()),
            "cum_cost_eur": float(m["cost_eur"].sum()), "cum_sla_credits_eur": float(m["sla_credits_eur"].sum()),
            "final_share": float(tail["share"].mean()), "gpus_end": int(m["gpus_in_force"].iloc[-1]),
            "gpus_mean": float(m["gpus_in_force"].mean()),
            "request_utilisation_mean": float(m["request_utilisation"].mean()),
            "sla_attainment_mean": float(m["sla_attainment"].mean()),
            "contracts_active_end": int(m["contracts_active"].iloc[-1])}


# ------------------------------------------------------------------ tables
def speed_label(s: float) -> str:
    return "never" if s == 0.0 else "closed" if math.isinf(s) else f"{s:g}x"


def cells_table(runs, searches: dict, seeds: list[int]):
    """One row per (target, speed) evaluated: mean and 95 % CI, paired change vs speed 1."""
    import pandas as pd
    from sim.core.stats import mean_ci

    rows = []
    for target, search in searches.items():
        base = runs[(runs.cell_target == "table")].set_index("seed").reindex(seeds)
        for p in search.points():
            ct, cs = cell_key(target, p.x)
            g = runs[(runs.cell_target == ct) & (runs.speed == cs)].set_index("seed").reindex(seeds)
            row = {"target": target, "speed": p.x, "speed_label": speed_label(p.x), "bisection": p.bisection,
                   "reps": int(g.cum_margin_eur.notna().sum())}
            for col in RUN_COLUMNS:
                r = mean_ci(g[col].to_numpy(dtype=float))
                row[col], row[col + "_ci95"] = r.mean, r.half_width
            r = mean_ci((g.cum_margin_eur - base.cum_margin_eur).to_numpy(dtype=float))
            row["d_cum_margin_vs_table_eur"], row["d_cum_margin_vs_table_eur_ci95"] = r.mean, r.half_width
            row["in_plausible_range"] = PLAUSIBLE[0] <= p.x <= PLAUSIBLE[1]
            rows.append(row)
    return pd.DataFrame(rows)


def crossings_table(searches: dict):
    import pandas as pd

    rows = []
    for target, search in searches.items():
        c = search.result()
        pl = [p for p in c.points if PLAUSIBLE[0] <= p.x <= PLAUSIBLE[1]]
        lo = min(pl, key=lambda p: p.mean) if pl else None
        rows.append({"target": target, "status": c.status, "crossing_speed": c.x, "bracket_low": c.x_low,
                     "bracket_high": c.x_high, "ci_positive_up_to": c.positive_up_to,
                     "ci_negative_from": c.negative_from, "min_margin_speed": c.min_x,
                     "min_margin_eur": c.min_mean, "min_margin_eur_ci95": c.min_half_width,
                     "plausible_min_margin_speed": lo.x if lo else math.nan,
                     "plausible_min_margin_eur": lo.mean if lo else math.nan,
                     "plausible_min_margin_eur_ci95": lo.half_width if lo else math.nan,
                     "searched_from": c.points[0].x, "searched_to": c.points[-1].x, "points": len(c.points)})
    return pd.DataFrame(rows)


def verdict(row) -> str:
    """One line per target: the tipping point, or that there is none in the searched range."""
    rng = f"{speed_label(row['searched_from'])} ... {speed_label(row['searched_to'])}"
    if row["status"] == "crossing":
        x, a = row["crossing_speed"], row["bracket_low"]
        where = (f"at {x:.2f}x" if math.isfinite(x) else f"above {speed_label(a)}")
        inside = (PLAUSIBLE[0] <= x <= PLAUSIBLE[1]) if math.isfinite(x) else False
        return (f"tipping point {where} (bracket {speed_label(a)}-{speed_label(row['bracket_high'])}; "
                f"{'inside' if inside else 'outside'} the plausible {PLAUSIBLE[0]:g}-{PLAUSIBLE[1]:g}x)")
    if row["status"] == "below":
        return f"negative already at {speed_label(row['searched_from'])}: no tipping point, a loss at every speed searched"
    text = (f"no tipping point in {rng}: lowest margin {row['min_margin_eur']/1e6:+.2f} "
            f"± {row['min_margin_eur_ci95']/1e6:.2f} M EUR ({speed_label(row['min_margin_speed'])})")
    if math.isfinite(row["plausible_min_margin_eur"]):
        text += (f"; in the plausible {PLAUSIBLE[0]:g}-{PLAUSIBLE[1]:g}x at least "
                 f"{row['plausible_min_margin_eur']/1e6:+.2f} ± {row['plausible_min_margin_eur_ci95']/1e6:.2f} M "
                 f"({speed_label(row['plausible_min_margin_speed'])})")
    return text


# ------------------------------------------------------------------ figure
def plot(cells, crossings, out, reps: int, months: int):
    import matplotlib.pyplot as plt
    import numpy as np

    finite = sorted({s for s in cells.speed.unique() if 0.0 < s < INF} | set(PLAUSIBLE))
    lo, hi = math.log2(finite[0]) - 1.0, math.log2(finite[-1]) + 1.0
    ticks = {0.0: "never\n(frozen)", INF: "closed at\nmonth 0"}

    def xpos(s: float) -> float:
        return lo if s == 0.0 else hi if math.isinf(s) else math.log2(s)

    targets = list(crossings.target)
    ncol = min(3, len(targets))
    nrow = math.ceil(len(targets) / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(5.2 * ncol, 4.0 * nrow), squeeze=False, sharey=True)
    grid_ticks = sorted(set(cells.speed[~cells.bisection]))
    for ax, target in zip(axes.flat, targets):
        g = cells[cells.target == target].sort_values("speed")
        x = np.array([xpos(s) for s in g.speed])
        m = g.cum_margin_eur.to_numpy() / 1e6
        h = np.nan_to_num(g.cum_margin_eur_ci95.to_numpy(dtype=float)) / 1e6
        ax.axvspan(math.log2(PLAUSIBLE[0]), math.log2(PLAUSIBLE[1]), color="tab:green", alpha=0.08,
                   label=f"plausible speed {PLAUSIBLE[0]:g}-{PLAUSIBLE[1]:g}x")
        ax.fill_between(x, m - h, m + h, color="tab:blue", alpha=0.2, lw=0, label="95 % CI of the mean")
        ax.plot(x, m, "-", color="tab:blue", label="mean cumulative margin")
        b = g.bisection.to_numpy()
        ax.plot(x[~b], m[~b], "o", color="tab:blue", ms=4)
        if b.any():
            ax.plot(x[b], m[b], "D", color="tab:purple", ms=4, label="bisection point")
        ax.axhline(0.0, color="k", lw=1.0)
        row = crossings[crossings.target == target].iloc[0]
        if row["status"] == "crossing" and math.isfinite(row["crossing_speed"]):
            xc = xpos(row["crossing_speed"])
            ax.axvline(xc, color="tab:red", ls="--", lw=1.2)
            ax.plot([xc], [0.0], "X", color="tab:red", ms=9, label="tipping point")
        elif row["status"] == "crossing":          # bracketed by the last finite speed and "closed"
            ax.axvspan(xpos(row["bracket_low"]), xpos(row["bracket_high"]), color="tab:red", alpha=0.1,
                       label="tipping point in this bracket")
        ax.text(0.03, 0.04, verdict(row).replace(" (", "\n(").replace("; ", ";\n"), transform=ax.transAxes, fontsize=7.5,
                va="bottom", bbox=dict(boxstyle="round", fc="white", ec="0.7", alpha=0.9))
        ax.set_xticks([xpos(s) for s in grid_ticks], [ticks.get(s, speed_label(s)) for s in grid_ticks], fontsize=8)
        ax.set_xlim(lo - 0.3, hi + 0.3)
        ax.set_title("every hyperscaler, every vertical" if target == "all" else f"target: {target}", fontsize=10)
        ax.grid(alpha=0.3)
        ax.set_xlabel("gap-closing speed (x the table's curves; log scale)", fontsize=8)
    for ax in axes[:, 0]:
        ax.set_ylabel(f"{months}-month cumulative gross margin, M EUR", fontsize=9)
    for ax in list(axes.flat)[len(targets):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7, loc="upper right")
    fig.suptitle(f"Sovereignty-gap tipping point, full forecast (small scenario's market, traffic and ledger; fleet under "
                 f"the threshold capacity policy)\n{reps} paired seeds per cell, mean and 95 % CI", fontsize=11)
    fig.tight_layout()
    return save_png(fig, out, "gap_tipping_point")


# ------------------------------------------------------------------ main
def parse_speeds(text: str | None):
    from sim.core.errors import UserError

    if text is None:
        return None
    try:
        xs = tuple(INF if t.strip() in ("inf", "closed") else 0.0 if t.strip() == "never" else float(t)
                   for t in text.split(","))
    except ValueError:
        raise UserError(f"--speeds {text}: a comma list of numbers >= 0, 'never' or 'inf'") from None
    if len(xs) < 2 or len(set(xs)) != len(xs) or min(xs) < 0:
        raise UserError(f"--speeds {text}: need two or more distinct speeds >= 0")
    return xs


def main() -> int:
    import pandas as pd
    from sim.core.errors import UserError
    from sim.study.crossing import CrossingSearch

    p = parser(__file__, __doc__)
    p.add_argument("--targets", default=None, help=f"comma list (default {','.join(TARGETS)}; --quick: all)")
    p.add_argument("--speeds", default=None, help="comma list of speeds for every target's grid (numbers, "
                                                  "'never' = 0, 'inf'); default: GRID_ALL for all, GRID_TARGET otherwise")
    p.add_argument("--bisect-steps", type=int, default=None, help=f"bisection steps after the grid (default {BISECT_STEPS})")
    p.add_argument("--months", type=int, default=None, help=f"horizon (default {MONTHS}; --quick 3)")
    args = p.parse_args()
    reps = args.replications or (2 if args.quick else REPLICATIONS)
    months = args.months or (3 if args.quick else MONTHS)
    steps = args.bisect_steps if args.bisect_steps is not None else (1 if args.quick else BISECT_STEPS)
    if reps < 1 or months < 1 or steps < 0:
        raise UserError("--replications and --months must be >= 1, --bisect-steps >= 0")
    targets = tuple(t.strip() for t in args.targets.split(",")) if args.targets else (("all",) if args.quick else TARGETS)
    speeds = parse_speeds(args.speeds) or ((0.0, 1.0, INF) if args.quick else None)
    sets = tuple(args.set)
    base = base_scenario(months, sets)          # a bad --set or target is refused before any run
    for t in targets:
        parse_target(t, base.market)
    seeds = [args.seed + i for i in range(reps)]
    searches = {t: CrossingSearch(speeds or (GRID_ALL if t == "all" else GRID_TARGET), steps) for t in targets}
    results: dict[tuple, dict] = {}
    t0 = time.perf_counter()
    rounds = 0
    with executor(args) as ex:
        while True:
            todo = [(t, x) for t, s in searches.items() for x in s.pending()]
            if not todo:
                break
            rounds += 1
            tasks, seen = [], set()
            for t, x in todo:
                ck = cell_key(t, x)
                for seed in seeds:
                    if (ck, seed) not in results and (ck, seed) not in seen:
                        seen.add((ck, seed))
                        tasks.append((ck[0] if ck[0] != "table" else "all", ck[1], seed, months, sets))
            rows = list(ex.map(one, tasks)) if ex is not None else [one(t) for t in tasks]
            for task, row in zip(tasks, rows):
                ck = cell_key(task[0], task[1])
                results[(ck, task[2])] = dict(row, cell_target=ck[0])
            for t, x in todo:
                searches[t].add(x, [results[(cell_key(t, x), s)]["cum_margin_eur"] for s in seeds])
    wall = time.perf_counter() - t0
    runs = pd.DataFrame(list(results.values()))
    runs["target"] = runs["cell_target"]
    runs = runs.sort_values(["cell_target", "speed", "seed"]).reset_index(drop=True)
    cells = cells_table(runs, searches, seeds)
    crossings = crossings_table(searches)
    crossings["verdict"] = [verdict(r) for _, r in crossings.iterrows()]
    out = out_dir(args)
    write_csv(cells, out, "gap_tipping_point_cells")
    write_csv(runs.drop(columns=["target"]).rename(columns={"cell_target": "target"}), out, "gap_tipping_point_runs")
    write_csv(crossings, out, "gap_tipping_point_crossings")
    png = plot(cells, crossings, out, reps, months)
    headline = {"forecasts": len(runs), "replications": reps, "months": months, "wall_s": round(wall, 1),
                "plausible_speed_range": f"{PLAUSIBLE[0]:g}-{PLAUSIBLE[1]:g}x",
                **{f"verdict_{r['target']}": r["verdict"] for _, r in crossings.iterrows()}}
    write_report(out, "Sovereignty-gap tipping point (full forecast, threshold capacity policy)", headline,
                 [("36-month cumulative margin vs gap-closing speed per target, 95 % CI, zero line, tipping point", png)],
                 scenario_for(targets[0], 1.0, months, sets))
    pd.set_option("display.width", 240)
    show = cells[["target", "speed_label", "reps", "cum_margin_eur", "cum_margin_eur_ci95", "d_cum_margin_vs_table_eur",
                  "d_cum_margin_vs_table_eur_ci95", "final_share", "gpus_end", "cum_cost_eur"]]
    print(show.to_string(index=False, float_format=lambda v: f"{v:,.3g}"))
    for _, r in crossings.iterrows():
        print(f"{r['target']}: {r['verdict']}")
    print(f"{len(runs)} forecasts ({rounds} rounds) in {wall:.1f} s wall; wrote {out}/gap_tipping_point.png, "
          "gap_tipping_point_cells.csv, gap_tipping_point_runs.csv, gap_tipping_point_crossings.csv")
    return 0


if __name__ == "__main__":
    raise SystemExit(main_wrapper(main))
