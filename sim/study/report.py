"""A self-contained HTML report: one file a strategist can open in a browser or mail.

Figures are embedded as base64 PNG (no side files), followed by the headline table (the run
summary, flattened), the sources table (where each default number came from) and the resolved
scenario as JSON.  No scripts, no external style sheets.
"""
from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

REPORT_NAME = "report.html"

_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;
max-width:1100px;color:#222;line-height:1.4;padding:0 1em}
h1{font-size:1.6em}h2{font-size:1.2em;margin-top:1.8em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:.9em}td,th{border:1px solid #ddd;padding:.25em .6em;
text-align:left;vertical-align:top}th{background:#f4f4f4}td.num{text-align:right;
font-variant-numeric:tabular-nums}figure{margin:1em 0}img{max-width:100%}
figcaption{font-size:.9em;color:#555}pre{background:#f8f8f8;padding:1em;overflow:auto;
font-size:.8em}
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
    return items


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


def render_html_report(title: str, summary: Mapping | None, figures: Any, scenario_json: str | Mapping | None,
                       sources_rows: Sequence[Mapping[str, Any]] | Sequence[Sequence[Any]] | None) -> str:
    parts = [f"<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
             f"<style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1>"]
    figs = _figure_items(figures)
    if figs:
        parts.append("<h2>Figures</h2>")
        for caption, f in figs:
            b64 = base64.b64encode(_png_bytes(f)).decode("ascii")
            cap = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
            parts.append(f"<figure><img alt=\"{html.escape(caption)}\" src=\"data:image/png;base64,{b64}\">{cap}</figure>")
    if summary:
        parts.append("<h2>Headline numbers</h2>")
        parts.append(_table(["quantity", "value"], _flatten(summary)))
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
                      filename: str = REPORT_NAME) -> Path:
    """Write ``out_dir/report.html`` and return its path.

    ``figures``: PNG paths, PNG bytes or matplotlib Figures, as a list (caption = file stem),
    a list of ``(caption, figure)`` pairs or a ``{caption: figure}`` dict.
    ``summary``: nested dict of headline numbers.  ``scenario_json``: the resolved scenario
    (JSON text or dict).  ``sources_rows``: dicts (columns = keys) or sequences.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / filename
    path.write_text(render_html_report(title, summary, figures, scenario_json, sources_rows), encoding="utf-8")
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


def write_run_report(result, title: str | None = None) -> Path:
    """``report.html`` for one ``sim.study.run.RunResult`` written to ``result.out_dir``: every PNG
    the run wrote, the headline summary, the sources table and the resolved scenario.  One
    call for ``sovsim run`` to make after ``write_outputs``."""
    out = Path(result.out_dir)
    figs = [(p.stem, p) for p in sorted(out.glob("*.png"))]
    scen = result.scenario.model_dump(mode="json")
    scen["simulation"]["seed"] = result.seed
    headline_keys = ("arrivals", "completed", "rejected", "in_flight", "gpus", "gpu_utilisation",
                     "throughput_output_tokens_per_s", "sla_attainment", "ttft_s", "tpot_s", "e2e_s",
                     "residency_violations", "verticals", "workloads", "deployments")
    summary = {k: result.summary[k] for k in headline_keys if k in result.summary}
    return write_html_report(out, title or f"sovsim run: {result.scenario.name} (seed {result.seed})",
                             summary, figs, scen, scenario_sources_rows(result.scenario))
