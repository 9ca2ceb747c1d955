"""The glossary (sim/study/glossary.py): every headline key a report shows has a human label,
values read with units, parameter keys become bar labels."""
from __future__ import annotations

from sim.study.glossary import TERMS, axis_label, caption, format_value, label, parameter_label
from sim.study.report import FORECAST_HEADLINE, RUN_HEADLINE


def test_every_headline_key_has_a_label():
    for key in RUN_HEADLINE + FORECAST_HEADLINE:
        last = key.split(".")[-1]
        assert key in TERMS or last in TERMS or key.split(".")[0] in TERMS, key
        assert "_" not in label(key), (key, label(key))


def test_no_label_calls_the_busy_share_gpu_utilisation():
    for key, t in TERMS.items():
        assert "gpu utilisation" not in t.label.lower(), key
    assert "not a load measure" in label("gpu_utilisation") and "not a load measure" in label("busy_share")


def test_formats():
    assert format_value("gross_margin_share", 0.798) == "79.8 %"
    assert format_value("tokens", 8.381e12) == "8.38 trillion"
    assert format_value("revenue_eur", 1234567.891) == "EUR 1,234,568"
    assert format_value("revenue_eur", 3.4) == "EUR 3.40" and format_value("sla_credits_eur", 0.0) == "EUR 0"
    assert format_value("ttft_s.p99", 0.1011) == "101 ms" and format_value("ttft_s", 13.2) == "13.20 s"
    assert format_value("arrivals", 3656) == "3,656"
    assert format_value("sla_attainment", None) == "-" and format_value("sla_attainment", float("nan")) == "-"
    assert axis_label("request_utilisation") == "Request utilisation (%)"
    assert axis_label("revenue_eur") == "Revenue (EUR)"


def test_dotted_paths_and_parameters():
    assert label("workloads.chat.ttft_s.p99") == "chat: TTFT p99"
    assert label("deployments.mixtral-h100.request_utilisation") == "mixtral-h100: Request utilisation"
    assert label("economics.margin_eur") == "Gross margin"
    assert parameter_label("competitor", "sovereignty.*.midpoint_month") == "competitors: month the gap is half closed"
    assert parameter_label("vertical", "beta_price") == "buyers: price weight in buyer choice"
    assert parameter_label("sovereign", "price_eur_per_mtok_in") == "sovereign offer: price per 1M input tokens (EUR)"
    assert caption("overview").startswith("Left: the fleet's load") and caption("some_figure") == "Some figure"
