"""report.html (sim/study/report.py): warnings first, headline numbers under human labels with
units, the run's tables and the forecast's month table, figures with captions; the busy share
never reads as "GPU utilisation"."""
from __future__ import annotations

import html as html_mod
import json
import re

import pandas as pd
import pytest

from sim.forecast.forecast import run_forecast
from sim.scenario import load_scenario, with_overrides
from sim.study.report import finish_forecast, headline_rows, month_table, render_html_report, write_run_report
from sim.study.run import run

TINY_FORECAST = {"forecast.months": 3, "forecast.windows_per_month": 1, "forecast.window_s": 10.0,
                 "forecast.warmup_s": 5.0}


def _text(html: str) -> str:
    """What a reader sees: the page without tags, the embedded images and the resolved-scenario JSON."""
    html = re.sub(r"<pre>.*?</pre>", "", html, flags=re.S)
    html = re.sub(r'src="data:[^"]*"', "", html)
    return re.sub(r"<[^>]+>", " ", html)


@pytest.fixture(scope="module")
def day_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("day")
    r = run(with_overrides(load_scenario("day"), {"simulation.horizon_s": 600.0}), out_dir=out)
    return r, write_run_report(r).read_text()


def test_run_report_reads_as_a_strategist_needs(day_report):
    r, html = day_report
    text = _text(html)
    assert "GPU utilisation" not in text and "GPU util" not in text
    w = html.index("Warnings (1)")
    assert w < html.index("Headline numbers") < html.index("<h2>Figures")
    assert r.summary["warnings"][0] in html
    # the load first, as a percentage under its label, the raw key beside it
    rows = headline_rows(r.summary, ("request_utilisation", "economics.margin_share", "ttft_s.p99", "busy_share"))
    assert rows[0] == ("Request utilisation", f"{r.summary['request_utilisation'] * 100:.1f} %", "request_utilisation")
    assert rows[1][0] == "Gross margin share of revenue" and rows[1][1].endswith(" %")
    assert rows[2][1].endswith(" ms") and rows[3][0].startswith("Busy share") and "not a load measure" in rows[3][0]
    for heading in ("<h2>Workloads", "<h2>Deployments", "<h2>Sites"):
        assert heading in html
    sites = html[html.index("<h2>Sites"):html.index("<h2>Figures")]
    assert "<th>cost</th>" in sites and f"EUR {r.summary['economics']['costs_eur']:,.2f}" in sites
    assert "<figcaption>Left: the fleet's load per time bin as request utilisation" in html_mod.unescape(html)


def test_report_without_warnings_says_what_was_checked():
    html = render_html_report("t", {"a": 1, "warnings": []}, [], None, None)
    assert "No warnings (checked:" in html


def test_forecast_report_has_the_month_table_and_warnings(tmp_path):
    sc = with_overrides(load_scenario("default"), {**TINY_FORECAST, "sites.1.certifications": ["BSI-C5"]})
    res = finish_forecast(run_forecast(sc, out_dir=tmp_path, figures=False))
    html = (tmp_path / "report.html").read_text()
    s = json.loads((tmp_path / "summary.json").read_text())
    assert s["warnings"] == res.summary["warnings"] and any("mixtral-fra" in w for w in s["warnings"])
    assert html.index("Warnings (") < html.index("Headline numbers") < html.index("<h2>Months")
    header, rows = month_table(res.monthly)
    assert len(rows) == 3 and header[0] == "month" and "SLA attainment" in header
    assert rows[0][-1].endswith("%") and rows[0][-4].startswith("EUR")
    # revenue, cost, SLA credits, gross margin: the reader can check the margin from the row
    i = header.index("revenue")
    assert header[i:i + 4] == ["revenue", "cost", "SLA credits", "gross margin"]
    man = json.loads((tmp_path / "manifest.json").read_text())   # the rewritten summary is recorded
    assert {f["name"] for f in man["files"]} >= {"summary.json", "forecast.png", "report.html"}
    assert (tmp_path / "forecast.png").exists() and "forecast.png" in res.files and "report.html" in res.files
    assert "GPU utilisation" not in _text(html)
    assert "SLA attainment against the strictest attainment target of the tenants' SLA classes (dashed" in html_mod.unescape(html)


def test_month_table_prefers_request_utilisation():
    df = pd.DataFrame({"month": [0], "contracts_active": [3], "contracts_won": [1], "contracts_lost": [0],
                       "requests": [2.6e6], "gpus": [16], "gpu_utilisation": [0.99], "request_utilisation": [0.12],
                       "sla_attainment": [0.995], "ttft_p99_s": [0.7], "revenue_eur": [1e4], "cost_eur": [8e3],
                       "gross_margin_eur": [2e3], "gross_margin_share": [0.2]})
    header, rows = month_table(df)
    assert header[6] == "request utilisation" and rows[0][6] == "12.0 %"
    header, rows = month_table(df.drop(columns="request_utilisation"))
    assert header[6] == "busy share (not a load measure)" and rows[0][6] == "99.0 %"


def test_wide_tables_scroll_in_a_compact_font_instead_of_overflowing_the_page():
    header = [f"c{i}" for i in range(14)]
    page = render_html_report("t", None, [], None, None, warnings=[],
                              tables=[("Months", header, [["1"] * 14]), ("Narrow", ["a", "b"], [["1", "2"]])])
    assert page.count('<div class="wide"><table>') == 1          # only the 14-column table
    assert ".wide{overflow-x:auto}" in page
