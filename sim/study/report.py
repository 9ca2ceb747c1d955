"""A self-contained HTML report: one file a strategist can open in a browser or mail.

From the top: the warnings (:mod:`sim.study.warnings`), the headline numbers under human
labels with units and percentages (:mod:`sim.study.glossary`; the raw ``summary.json`` key
beside each), tables (a forecast's months; a run's workloads, deployments and sites), the
figures embedded as base64 PNG with captions that state what each shows, the sources table
(where each default number came from) and the resolved scenario as JSON.  No scripts, no
external style sheets.
"""
from __future__ import annotations

import base64
import html
import io
import re
import json
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from sim.core.runfolder import add_to_manifest, write_atomic
from sim.core.serialise import json_default
from sim.forecast.forecast import ForecastResult
from sim.market.market import MONTH_S
from sim.study.figures import forecast_figure
from sim.study.glossary import caption as figure_caption
from sim.study.glossary import format_value, label
from sim.study.warnings import forecast_warnings

REPORT_NAME = "report.html"

_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;
max-width:1100px;color:#222;line-height:1.4;padding:0 1em}
h1{font-size:1.6em}h2{font-size:1.2em;margin-top:1.8em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:.9em}td,th{border:1px solid #ddd;padding:.25em .6em;
text-align:left;vertical-align:top}th{background:#f4f4f4}td.num{text-align:right;
font-variant-numeric:tabular-nums;white-space:nowrap}figure{margin:1em 0}img{max-width:100%}
figcaption{font-size:.9em;color:#555}pre{background:#f8f8f8;padding:1em;overflow:auto;
font-size:.8em}
.warn{background:#fff4e5;border:1px solid #f0b35a;padding:.6em 1em;border-radius:4px}
.warn li{margin:.2em 0}.ok{color:#2a7a2a}code{font-size:.85em;color:#666}
.wide{overflow-x:auto}.wide table{font-size:.78em}.wide td,.wide th{padding:.2em .35em}
"""


def _png_bytes(fig: Any) -> bytes:
    """PNG bytes of a path, raw bytes or a matplotlib Figure."""
    if isinstance(fig, (bytes, bytearray)):
        return bytes(fig)
    if isinstance(fig, (str, Path)):
        return Path(fig).read_bytes()
    if hasattr(fig, "savefig"):
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
        return buf.getvalue()
    raise TypeError(f"figure must be a PNG path, PNG bytes or a matplotlib Figure, got {type(fig).__name__}")


def _figure_items(figures: Any) -> list[tuple[str, Any]]:
    if figures is None:
        return []
    if isinstance(figures, Mapping):
        return [(str(k), v) for k, v in figures.items()]
    items = []
    for f in figures:
        if isinstance(f, tuple) and len(f) == 2:
            items.append((str(f[0]), f[1]))
        else:
            items.append((Path(f).stem if isinstance(f, (str, Path)) else "", f))
    return [(figure_caption(c) if c and " " not in c else c, f) for c, f in items]


def _fmt(v: Any) -> str:
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        if v != v:
            return "nan"
        a = abs(v)
        if a != 0 and (a < 1e-3 or a >= 1e7):
            return f"{v:.4g}"
        return f"{v:,.4f}".rstrip("0").rstrip(".") if a < 1000 else f"{v:,.1f}"
    return str(v)


def _flatten(d: Mapping, prefix: str = "") -> list[tuple[str, Any]]:
    out = []
    for k, v in d.items():
        if isinstance(v, Mapping):
            out.extend(_flatten(v, f"{prefix}{k}."))
        else:
            out.append((f"{prefix}{k}", v))
    return out


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    h = "".join(f"<th>{html.escape(str(c))}</th>" for c in header)
    body = []
    for r in rows:
        cells = []
        for v in r:
            cls = ' class="num"' if isinstance(v, (int, float)) and not isinstance(v, bool) else ""
            cells.append(f"<td{cls}>{html.escape(_fmt(v))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{h}</tr></thead><tbody>{''.join(body)}</tbody></table>"


_NUMERIC = re.compile(r"^(EUR )?[-+]?[\d.,]+( %| ms| s| (million|billion|trillion))?$")


def _text_table(header: Sequence[str], rows: Iterable[Sequence[str]], num_from: int | None = None,
                code_from: int | None = None) -> str:
    """A table of already formatted cells; numbers (or every column from ``num_from`` on) are
    right-aligned, columns from ``code_from`` on shown as code (raw keys)."""
    h = "".join(f"<th>{html.escape(str(c))}</th>" for c in header)
    body = []
    for r in rows:
        cells = []
        for i, v in enumerate(r):
            if code_from is not None and i >= code_from:
                cells.append(f"<td><code>{html.escape(str(v))}</code></td>")
            else:
                num = i >= num_from if num_from is not None else bool(_NUMERIC.match(str(v)))
                cls = ' class="num"' if num else ""
                cells.append(f"<td{cls}>{html.escape(str(v))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{h}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def headline_rows(summary: Mapping, keys: Sequence[str] | None = None) -> list[tuple[str, str, str]]:
    """(human label, formatted value with unit, raw dotted key) of each headline number; with
    ``keys`` (dotted paths) those in that order, else every numeric or text leaf of ``summary``."""
    flat = dict(_flatten(summary))
    chosen = [k for k in keys if k in flat] if keys is not None else list(flat)
    rows = []
    for k in chosen:
        v = flat[k]
        if isinstance(v, (list, tuple)):
            continue
        rows.append((label(k), format_value(k, v), k))
    return rows


def render_html_report(title: str, summary: Mapping | None, figures: Any, scenario_json: str | Mapping | None,
                       sources_rows: Sequence[Mapping[str, Any]] | Sequence[Sequence[Any]] | None,
                       warnings: Sequence[str] | None = None, headline_keys: Sequence[str] | None = None,
                       tables: Sequence[tuple[str, Sequence[str], Sequence[Sequence[str]]]] | None = None,
                       notes: str | None = None) -> str:
    parts = [f"<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
             f"<style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1>"]
    if warnings is None and summary and isinstance(summary.get("warnings"), list):
        warnings = summary["warnings"]
    if warnings is not None:
        if warnings:
            items = "".join(f"<li>{html.escape(w)}</li>" for w in warnings)
            parts.append(f"<div class=\"warn\"><strong>Warnings ({len(warnings)})</strong><ul>{items}</ul></div>")
        else:
            parts.append("<p class=\"ok\">No warnings (checked: deployments and sites no tenant can use or that "
                         "served almost nothing, fleet load, SLA targets, queue growth, rejected streams).</p>")
    if notes:
        parts.append(f"<p>{html.escape(notes)}</p>")
    if summary:
        parts.append("<h2>Headline numbers</h2>")
        rows = headline_rows(summary, headline_keys)
        parts.append(_text_table(["quantity", "value", "key in summary.json"], rows, num_from=1, code_from=2))
    for heading, header, rows in tables or ():
        parts.append(f"<h2>{html.escape(heading)}</h2>")
        # a wide table (the forecast's months) in a compact font, scrolling rather than overflowing the page
        table = _text_table(header, rows)
        parts.append(f"<div class=\"wide\">{table}</div>" if len(header) > 8 else table)
    figs = _figure_items(figures)
    if figs:
        parts.append("<h2>Figures</h2>")
        for cap_text, f in figs:
            b64 = base64.b64encode(_png_bytes(f)).decode("ascii")
            cap = f"<figcaption>{html.escape(cap_text)}</figcaption>" if cap_text else ""
            parts.append(f"<figure><img alt=\"{html.escape(cap_text)}\" src=\"data:image/png;base64,{b64}\">{cap}</figure>")
    if sources_rows:
        parts.append("<h2>Sources</h2>")
        first = sources_rows[0]
        if isinstance(first, Mapping):
            cols = list(first.keys())
            for r in sources_rows[1:]:
                cols += [k for k in r.keys() if k not in cols]
            parts.append(_table(cols, ([r.get(c, "") for c in cols] for r in sources_rows)))
        else:
            parts.append(_table([f"col{i}" for i in range(len(first))], sources_rows))
    if scenario_json:
        data = json.loads(scenario_json) if isinstance(scenario_json, str) else scenario_json
        parts.append("<h2>Resolved scenario</h2>")
        parts.append(f"<pre>{html.escape(json.dumps(data, indent=2, sort_keys=True))}</pre>")
    parts.append("</body></html>\n")
    return "".join(parts)


def write_html_report(out_dir: str | Path, title: str, summary: Mapping | None, figures: Any,
                      scenario_json: str | Mapping | None,
                      sources_rows: Sequence[Mapping[str, Any]] | Sequence[Sequence[Any]] | None,
                      filename: str = REPORT_NAME, **extra: Any) -> Path:
    """Write ``out_dir/report.html`` and return its path.

    ``figures``: PNG paths, PNG bytes or matplotlib Figures, as a list (caption = file stem),
    a list of ``(caption, figure)`` pairs or a ``{caption: figure}`` dict.
    ``summary``: nested dict of headline numbers.  ``scenario_json``: the resolved scenario
    (JSON text or dict).  ``sources_rows``: dicts (columns = keys) or sequences.
    ``extra``: ``warnings`` (list of lines; default: the summary's ``warnings``),
    ``headline_keys`` (dotted keys shown, in order; default: every leaf), ``tables``
    (``(heading, header, rows)`` of formatted cells) and ``notes`` (a paragraph).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / filename
    path.write_text(render_html_report(title, summary, figures, scenario_json, sources_rows, **extra), encoding="utf-8")
    return path


def scenario_sources_rows(scenario) -> list[dict[str, Any]]:
    """One row per leaf field of a scenario: dotted path, value, and the field's description
    (which carries its source or the word ``assumption``).  Feed it to ``sources_rows``."""
    from pydantic import BaseModel

    rows: list[dict[str, Any]] = []

    def walk(obj: Any, path: str, desc: str) -> None:
        if isinstance(obj, BaseModel):
            for name, info in type(obj).model_fields.items():
                walk(getattr(obj, name), f"{path}.{name}" if path else name, info.description or "")
        elif isinstance(obj, list) and obj and all(isinstance(x, BaseModel) for x in obj):
            for i, x in enumerate(obj):
                walk(x, f"{path}.{i}", desc)
        else:
            if isinstance(obj, dict) and any(isinstance(v, BaseModel) for v in obj.values()):
                for k, v in obj.items():
                    walk(v, f"{path}.{k}", desc)
                return
            value = json.dumps(obj, default=lambda o: o.model_dump(mode="json")
                               if isinstance(o, BaseModel) else str(o)) if isinstance(obj, (list, dict)) else obj
            rows.append({"field": path, "value": value, "source / meaning": desc})

    walk(scenario, "", "")
    return rows


RUN_HEADLINE = (
    "request_utilisation", "throughput_utilisation", "sla_attainment", "ttft_s.p50", "ttft_s.p99",
    "tpot_s.p50", "tpot_s.p99", "e2e_s.p50", "arrivals", "completed", "rejected", "in_flight",
    "throughput_requests_per_s", "throughput_output_tokens_per_s", "gpus", "replicas", "gpu_hours",
    "economics.revenue_eur", "economics.costs_eur", "economics.margin_eur", "economics.margin_share",
    "economics.cost_eur_per_mtok", "residency_violations", "preemptions", "busy_share")


def run_tables(summary: Mapping) -> list[tuple[str, list[str], list[list[str]]]]:
    """The per-workload, per-deployment and per-site tables of a run's summary, formatted."""
    f = format_value
    out = []
    ws = summary.get("workloads") or {}
    if ws:
        rows = [[n, w.get("vertical", ""), f("completed", w.get("completed")), f("rejected_share", w.get("rejected_share")),
                 f("ttft_s", (w.get("ttft_s") or {}).get("p50")), f("ttft_s", (w.get("ttft_s") or {}).get("p99")),
                 f("tpot_s", (w.get("tpot_s") or {}).get("p50")), f("tpot_s", (w.get("tpot_s") or {}).get("p99")),
                 f("sla_attainment", w.get("sla_attainment")), f("sla_target", w.get("sla_target")),
                 "yes" if w.get("sla_met") else "no"] for n, w in ws.items()]
        out.append(("Workloads", ["workload", "vertical", "completed", "rejected", "TTFT p50", "TTFT p99",
                                  "TPOT p50", "TPOT p99", "SLA attainment", "target", "target met"], rows))
    ds = summary.get("deployments") or {}
    if ds:
        rows = [[n, d.get("site") or "(unsited)", f"{d.get('model', '')} {d.get('precision', '')} TP{d.get('tp', '')} on {d.get('gpu', '')}",
                 f("gpus", d.get("gpus")), f("request_utilisation", d.get("request_utilisation")),
                 f("throughput_utilisation", d.get("throughput_utilisation")),
                 f("kv_occupancy_mean", d.get("kv_occupancy_mean")), f("busy_share", d.get("utilisation"))]
                for n, d in ds.items()]
        out.append(("Deployments", ["deployment", "site", "replica", "GPUs", "request utilisation",
                                    "throughput utilisation", "KV-cache occupancy", "busy share (not a load measure)"], rows))
    ss = summary.get("sites") or {}
    money = (summary.get("economics") or {}).get("by_site") or {}
    if ss:
        rows = []
        for n, st in ss.items():
            m = money.get("-" if n == "(unsited)" else n, {})
            rows.append([n, st.get("jurisdiction") or "-", ", ".join(st.get("certifications") or []) or "-",
                         f("gpus", st.get("gpus")), f("gpu_hours", st.get("gpu_hours")), f("completed", st.get("completed")),
                         f("revenue_eur", m.get("revenue_eur")), f("costs_eur", m.get("costs_eur")),
                         f("margin_eur", m.get("margin_eur")), f("busy_share", st.get("gpu_utilisation"))])
        out.append(("Sites", ["site", "jurisdiction", "certifications", "GPUs", "GPU-hours", "requests completed",
                              "revenue", "cost", "gross margin", "busy share (not a load measure)"], rows))
    return out


def write_run_report(result, title: str | None = None) -> Path:
    """``report.html`` for one ``sim.study.run.RunResult`` written to ``result.out_dir``: the
    warnings, the headline numbers, the workload / deployment / site tables, every PNG the run
    wrote, the sources table and the resolved scenario.  One call for ``sovsim run`` to make
    after ``write_outputs``."""
    out = Path(result.out_dir)
    figs = [(p.stem, p) for p in sorted(out.glob("*.png"))]
    scen = result.scenario.model_dump(mode="json")
    scen["simulation"]["seed"] = result.seed
    return write_html_report(out, title or f"sovsim run: {result.scenario.name} (seed {result.seed})",
                             result.summary, figs, scen, scenario_sources_rows(result.scenario),
                             warnings=result.summary.get("warnings", []), headline_keys=RUN_HEADLINE,
                             tables=run_tables(result.summary))


# ------------------------------------------------------------------ forecasts
FORECAST_HEADLINE = (
    "revenue_eur", "cost_eur", "sla_credits_eur", "gross_margin_eur", "gross_margin_share", "cost_eur_per_mtok", "tokens",
    "owned_cost_eur", "leased_cost_eur", "request_utilisation_mean", "sla_attainment_mean", "final_share", "contracts.won", "contracts.lost",
    "contracts.active", "contracts.churned", "contracts.expired", "contracts.renewed", "months",
    "residency_violations", "simulated_requests", "gpu_utilisation_mean")


def month_table(monthly) -> tuple[list[str], list[list[str]]]:
    """The forecast's month table (header, formatted rows), as the terminal prints it; the load
    column is ``request_utilisation`` when the table has it, else the busy share, named so."""
    load = "request_utilisation" if "request_utilisation" in monthly.columns else "gpu_utilisation"
    header = ["month", "contracts active", "won", "lost", "requests/s", "GPUs",
              "request utilisation" if load == "request_utilisation" else "busy share (not a load measure)",
              "SLA attainment", "TTFT p99 (s)", "revenue", "cost"]
    credits = "sla_credits_eur" in monthly.columns   # revenue - cost - SLA credits = gross margin
    header += (["SLA credits"] if credits else []) + ["gross margin", "margin share"]
    f = format_value
    rows = []
    for _, r in monthly.iterrows():
        rows.append([str(int(r["month"])), f("contracts_active", r["contracts_active"]), f("contracts_won", r["contracts_won"]),
                     f("contracts_lost", r["contracts_lost"]), f"{r['requests'] / MONTH_S:,.1f}", f("gpus", r["gpus"]),
                     f(load, r[load]), f("sla_attainment", r["sla_attainment"]),
                     "-" if r.get("ttft_p99_s") is None or r["ttft_p99_s"] != r["ttft_p99_s"] else f"{r['ttft_p99_s']:.2f}",
                     f("revenue_eur", r["revenue_eur"]), f("cost_eur", r["cost_eur"]),
                     *([f("sla_credits_eur", r["sla_credits_eur"])] if credits else []),
                     f("gross_margin_eur", r["gross_margin_eur"]), f("gross_margin_share", r["gross_margin_share"])])
    return header, rows


def site_table(summary: Mapping, months: int) -> tuple[list[str], list[list[str]]] | None:
    """The forecast's Sites table (``summary["sites"]``, :mod:`sim.forecast.sites`): GPUs at
    start and end, mean request utilisation, cost over the horizon and its owned/leased split."""
    sites = summary.get("sites")
    if not isinstance(sites, Mapping) or not sites:
        return None
    header = [label("site"), label("gpus_start"), label("gpus_end"), label("request_utilisation_mean"),
              f"Costs over {months} months (EUR)", "Owned: depreciation, colocation, power (EUR)",
              "Leased: rental, partner (EUR)"]
    f = format_value
    rows = [[name, f("gpus_start", st["gpus_start"]), f("gpus_end", st["gpus_end"]),
             f("request_utilisation_mean", st["request_utilisation_mean"]), f("cost_eur", st["cost_eur"]),
             f("owned_cost_eur", st["owned_cost_eur"]), f("leased_cost_eur", st["leased_cost_eur"])]
            for name, st in sites.items()]
    return header, rows


def finish_forecast(result: ForecastResult, title: str | None = None, figures: bool = True) -> ForecastResult:
    """What a person reads of a forecast, added to ``result``: ``summary["warnings"]``
    (:func:`sim.study.warnings.forecast_warnings`), ``request_utilisation_mean`` when the monthly
    table has ``request_utilisation``; with an output folder, ``summary.json`` rewritten with them,
    ``forecast.png`` (labelled, SLA target line) and ``report.html`` (warnings, headline, month
    table, figure, sources, resolved scenario).  Call it on ``run_forecast(..., figures=False)``."""
    s = result.summary
    s["warnings"] = forecast_warnings(result.monthly, result.scenario)
    if "request_utilisation" in result.monthly.columns and "request_utilisation_mean" not in s:
        s["request_utilisation_mean"] = float(result.monthly["request_utilisation"].mean())
    out = result.out_dir
    if out is None:
        return result
    out = Path(out)
    write_atomic(out / "summary.json", lambda t: t.write_text(json.dumps(s, indent=2, default=json_default) + "\n"))
    if figures and "forecast.png" not in result.files:
        result.files += forecast_figure(result)
    cfg_path = out / "config.json"
    cfg = json.loads(cfg_path.read_text()) if cfg_path.exists() else result.scenario.model_dump(mode="json")
    header, rows = month_table(result.monthly)
    tables = [("Months", header, rows)]
    st = site_table(s, len(result.monthly))
    if st is not None:
        tables.insert(0, ("Sites", *st))
    figs = [(p.stem, p) for p in sorted(out.glob("*.png"))]
    write_html_report(out, title or f"sovsim forecast: {result.scenario.name} (seed {result.seed})", s, figs, cfg,
                      scenario_sources_rows(result.scenario), warnings=s["warnings"],
                      headline_keys=FORECAST_HEADLINE, tables=tables,
                      notes="Money in EUR over the whole horizon; utilisation and attainment as shares of "
                            "capacity and of requests; months are simulated in sampled traffic windows "
                            "(docs/forecast.md).")
    if "report.html" not in result.files:
        result.files.append("report.html")
    add_to_manifest(out, ["summary.json", "forecast.png", "report.html"])
    return result
