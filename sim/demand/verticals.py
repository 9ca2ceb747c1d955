"""Demand defaults: fitted length laws, weekly rate profiles, burst state and the four verticals.

Everything here is read from ``models/demand/`` (written by ``sovsim fit-demand`` from the
traces in ``models/traces/``) plus the explicit transformations below.  Each vertical's
weekly profile is a documented transformation of the fitted Azure conversation profile;
the numbers of each transformation are marked ``assumption`` in :data:`VERTICALS` and in
``models/demand/README.md``.

There is no placement setting: a "dedicated" placement for healthcare and public-sector buyers
was listed here but read by no code, so it was removed (issue 14 item 5); every tenant shares
the replicas its residency allows.  Dedicated deployments (own replicas, own capacity tranches,
priced accordingly) are a mechanism still to build (docs/market.md, "Limits and doubts").

Hour-of-week convention: hour 0 = Monday 00:00-01:00 UTC, 168 hours.
"""
from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from sim.core.errors import UserError
from sim.core.resources import model_file
from sim.demand import distributions as dist
from sim.demand.arrivals import MarkovBurst
from sim.demand.fitting import DiscretisedLength
from sim.demand.traces import load_trace

# ------------------------------------------------------------------ length sources
# name -> (trace file under models/traces, column of sim.demand.traces.Trace)
LENGTH_SOURCES: dict[str, tuple[str, str]] = {
    "azure-code-prompt": ("azure_llm_2023/AzureLLMInferenceTrace_code.csv", "prompt_tokens"),
    "azure-code-output": ("azure_llm_2023/AzureLLMInferenceTrace_code.csv", "output_tokens"),
    "azure-conv-prompt": ("azure_llm_2023/AzureLLMInferenceTrace_conv.csv", "prompt_tokens"),
    "azure-conv-output": ("azure_llm_2023/AzureLLMInferenceTrace_conv.csv", "output_tokens"),
    "mooncake-conv-prompt": ("mooncake/conversation_trace.csv", "prompt_tokens"),
    "mooncake-conv-output": ("mooncake/conversation_trace.csv", "output_tokens"),
}
# bundled per-request traces usable for replay by name
TRACE_NAMES: dict[str, str] = {
    "azure-code": "azure_llm_2023/AzureLLMInferenceTrace_code.csv",
    "azure-conv": "azure_llm_2023/AzureLLMInferenceTrace_conv.csv",
    "mooncake-conv": "mooncake/conversation_trace.csv",
}
LENGTH_FAMILIES = ("best", "lognormal", "gamma", "weibull", "negbinom", "empirical")

FITS_FILE = "length_fits.json"
PROFILES_FILE = "weekly_profiles.csv"
BURST_FILE = "burst.json"
BASE_PROFILES = ("azure-code", "azure-conv")


def trace_path(name_or_path: str):
    """A bundled trace name (``azure-conv``, ...) or a file path."""
    from pathlib import Path
    if name_or_path in TRACE_NAMES:
        return model_file("traces", TRACE_NAMES[name_or_path])
    return Path(name_or_path)


@lru_cache(maxsize=None)
def _fits() -> dict:
    p = model_file("demand", FITS_FILE)
    if not p.is_file():
        raise UserError(f"{p}: missing; run `sovsim fit-demand` to create the fitted demand tables")
    return json.loads(p.read_text())


@lru_cache(maxsize=None)
def _trace_column(source: str) -> tuple[int, ...]:
    rel, col = LENGTH_SOURCES[source]
    return tuple(int(v) for v in getattr(load_trace(model_file("traces", rel)), col))


def length_distribution(source: str, family: str = "best", max_tokens: int | None = None):
    """The fitted (or empirical) length law of ``source``; ``max_tokens`` re-clips it (e.g. to
    a model's context window)."""
    if source not in LENGTH_SOURCES:
        raise UserError(f"source: {source!r} is not a fitted length source; allowed: {', '.join(LENGTH_SOURCES)}")
    if family not in LENGTH_FAMILIES:
        raise UserError(f"family: {family!r} is not allowed; allowed: {', '.join(LENGTH_FAMILIES)}")
    if family == "empirical":
        vals = _trace_column(source)
        if max_tokens is not None:
            vals = tuple(min(v, max_tokens) for v in vals)
        return dist.Empirical(vals)
    entry = _fits()[source]
    fam = entry["chosen"] if family == "best" else family
    f = entry["families"][fam]
    return DiscretisedLength(fam, tuple(f["params"]), int(max_tokens if max_tokens is not None else entry["max_tokens"]))


# ------------------------------------------------------------------ weekly profiles
@lru_cache(maxsize=None)
def _base_profiles() -> dict[str, np.ndarray]:
    p = model_file("demand", PROFILES_FILE)
    if not p.is_file():
        raise UserError(f"{p}: missing; run `sovsim fit-demand` to create the fitted demand tables")
    cols: dict[str, list[float]] = {b: [] for b in BASE_PROFILES}
    with p.open(newline="") as fh:
        for row in csv.DictReader(fh):
            for b in BASE_PROFILES:
                cols[b].append(float(row[b]))
    out = {b: np.asarray(v) for b, v in cols.items()}
    for b, v in out.items():
        if v.shape != (168,):
            raise UserError(f"{p}: column {b} has {len(v)} rows, expected 168")
    return out


@dataclass(frozen=True)
class ProfileTransform:
    """A weekly profile derived from a fitted base: rotate by ``shift_hours``, raise to
    ``flatten`` (< 1 shrinks the diurnal swing in log space), multiply weekday hours outside
    ``[office_start_utc, office_end_utc)`` by ``off_hours_factor`` and Saturday/Sunday hours
    by ``weekend_factor``, then normalise to mean 1."""

    base: str = "azure-conv"
    shift_hours: int = 0
    flatten: float = 1.0
    office_start_utc: int | None = None
    office_end_utc: int | None = None
    off_hours_factor: float = 1.0
    weekend_factor: float = 1.0

    def apply(self, base: np.ndarray) -> np.ndarray:
        m = np.roll(np.asarray(base, dtype=np.float64), self.shift_hours)
        m = m ** self.flatten
        how = np.arange(168)
        day, hour = how // 24, how % 24
        weekend = day >= 5
        if self.office_start_utc is not None:
            office = (hour >= self.office_start_utc) & (hour < self.office_end_utc)
            m = np.where(~weekend & ~office, m * self.off_hours_factor, m)
        m = np.where(weekend, m * self.weekend_factor, m)
        return m / m.mean()


@dataclass(frozen=True)
class SLAClass:
    ttft_s: float
    tpot_s: float
    attainment_target: float
    source: str


SLA_CLASSES: dict[str, SLAClass] = {
    "interactive": SLAClass(0.45, 0.04, 0.99, "MLPerf Inference v5.0 Llama2-70B-Interactive: p99 TTFT <= 450 ms, "
                            "p99 TPOT <= 40 ms (mlcommons.org/2025/04/llm-inference-v5/)"),
    "standard": SLAClass(2.0, 0.2, 0.99, "MLPerf Inference Server Llama-2-70B / Mixtral-8x7B: p99 TTFT <= 2 s, "
                         "p99 TPOT <= 200 ms"),
    "relaxed": SLAClass(5.0, 0.2, 0.95, "assumption: back-office assistants tolerate 5 s to first token and a 95% target"),
}


@dataclass(frozen=True)
class Vertical:
    name: str
    profile: ProfileTransform
    profile_note: str
    prompt_source: str
    output_source: str
    lengths_note: str
    sla_class: str
    sla_note: str
    model: str = "mixtral-8x7b"
    model_note: str = "assumption: the catalog's reference MoE model"
    prompt_max_tokens: int | None = None
    burst: str | None = "azure-conv"
    burst_note: str = ("fitted MMPP of the Azure 2024 conversation service (models/demand/burst.json); "
                       "assumption: its relative burstiness carries over to a tenant")
    allowed_jurisdictions: tuple[str, ...] | None = None
    required_certifications: tuple[str, ...] = ()
    residency_note: str = ""
    extra: dict = field(default_factory=dict)


# Weekday/weekend ratio of the Azure 2024 *code* service, the data point closest to a business
# tool: weekend hours average 39,572 requests vs 124,202 on weekdays (PROVENANCE.md of
# models/traces/azure_llm_2024), i.e. 0.32.
AZURE_CODE_WEEKEND_RATIO = 39572 / 124202

VERTICALS: dict[str, Vertical] = {
    "general": Vertical(
        name="general",
        profile=ProfileTransform("azure-conv"),
        profile_note="data: Azure 2024 conversation service hour-of-week profile, unchanged (UTC); "
                     "assumption: EU enterprise chat has the same shape",
        prompt_source="azure-conv-prompt", output_source="azure-conv-output",
        lengths_note="data: Azure 2023 conversation trace (fitted)",
        sla_class="standard", sla_note="MLPerf Server constraint",
    ),
    "finance": Vertical(
        name="finance",
        profile=ProfileTransform("azure-conv", office_start_utc=7, office_end_utc=17,
                                 off_hours_factor=0.35, weekend_factor=round(AZURE_CODE_WEEKEND_RATIO, 2)),
        profile_note="Azure conv profile x office hours 08-18 CET (07-17 UTC, no DST); weekday off-hours x0.35 "
                     "(assumption); weekends x0.32 (= Azure 2024 code service weekend/weekday ratio, data, "
                     "applied by assumption)",
        prompt_source="azure-code-prompt", output_source="azure-code-output",
        lengths_note="assumption: document extraction / classification (long prompts, short answers) is shaped "
                     "like the Azure 2023 code service",
        sla_class="interactive", sla_note="assumption: advisor-facing tools buy the MLPerf Interactive class",
        allowed_jurisdictions=("FR", "DE", "NL", "IT", "ES", "BE", "LU", "IE", "AT", "FI", "SE", "DK", "PT", "PL"),
        required_certifications=("ISO27001",),
        residency_note="assumption: EU/EEA processing (GDPR ch. V, EBA outsourcing guidelines) with ISO 27001",
    ),
    "healthcare": Vertical(
        name="healthcare",
        profile=ProfileTransform("azure-conv", flatten=0.5, weekend_factor=0.8),
        profile_note="Azure conv profile with its diurnal swing halved in log space (m**0.5) and weekends x0.8: "
                     "assumption (hospitals run 24/7)",
        prompt_source="mooncake-conv-prompt", output_source="mooncake-conv-output",
        lengths_note="assumption: long clinical records resemble Mooncake (Kimi) long-context conversations; "
                     "prompts clipped to 30,720 tokens to fit a 32k context with up to 2,000 output tokens "
                     "(6.9% of Mooncake prompts exceed 32k)",
        prompt_max_tokens=30720,
        sla_class="standard", sla_note="MLPerf Server constraint",
        allowed_jurisdictions=("FR",), required_certifications=("HDS",),
        residency_note="French health data must be hosted by an HDS-certified host (Code de la sante publique "
                       "art. L.1111-8); FR-only is an assumption for a French buyer",
    ),
    "public_sector": Vertical(
        name="public_sector",
        profile=ProfileTransform("azure-conv", office_start_utc=7, office_end_utc=17,
                                 off_hours_factor=0.1, weekend_factor=0.1),
        profile_note="Azure conv profile x office hours 08-18 CET (07-17 UTC); off-hours and weekends x0.1: "
                     "assumption (administration works office hours)",
        prompt_source="azure-conv-prompt", output_source="azure-conv-output",
        lengths_note="assumption: citizen/agent assistants are shaped like the Azure 2023 conversation service",
        sla_class="relaxed", sla_note="assumption",
        allowed_jurisdictions=("FR",), required_certifications=("SecNumCloud",),
        residency_note="French State 'cloud au centre' doctrine (circulaire 6282/SG, 2021; updated 2023) asks "
                       "for SecNumCloud for sensitive data; FR-only is an assumption",
    ),
}


def profile(name: str) -> np.ndarray:
    """168 hour-of-week multipliers (mean 1) for a base (``azure-code``, ``azure-conv``) or
    a vertical (``general``, ``finance``, ``healthcare``, ``public_sector``)."""
    bases = _base_profiles()
    if name in bases:
        return bases[name] / bases[name].mean()
    if name in VERTICALS:
        t = VERTICALS[name].profile
        return t.apply(bases[t.base])
    raise UserError(f"profile: {name!r} is not a fitted profile; allowed: {', '.join(PROFILE_NAMES)}")


PROFILE_NAMES = BASE_PROFILES + tuple(VERTICALS)


@lru_cache(maxsize=None)
def _bursts() -> dict:
    p = model_file("demand", BURST_FILE)
    if not p.is_file():
        raise UserError(f"{p}: missing; run `sovsim fit-demand` to create the fitted demand tables")
    return json.loads(p.read_text())


def burst(name: str):
    """The fitted :class:`sim.demand.arrivals.MarkovBurst` of ``azure-code`` or ``azure-conv``."""
    b = _bursts()
    if name not in b:
        raise UserError(f"burst: {name!r} is not a fitted burst state; allowed: {', '.join(b)}")
    m = b[name]["mmpp"]
    return MarkovBurst(m["multiplier"], m["mean_burst_s"], m["mean_gap_s"])


def vertical_workload(vertical: str, name: str, rate_per_s: float, **overrides) -> dict:
    """A workload table (``[[workloads]]`` entry of a scenario) with this vertical's defaults."""
    if vertical not in VERTICALS:
        raise UserError(f"vertical: {vertical!r} is not a default vertical; allowed: {', '.join(VERTICALS)}")
    v = VERTICALS[vertical]
    sla = SLA_CLASSES[v.sla_class]
    prompt = {"dist": "fitted", "source": v.prompt_source}
    if v.prompt_max_tokens:
        prompt["max"] = v.prompt_max_tokens
    w = {
        "name": name,
        "vertical": vertical,
        "model": v.model,
        "arrivals": {"kind": "nhpp", "rate_per_s": rate_per_s, "profile": vertical,
                     **({"burst": v.burst} if v.burst else {})},
        "prompt_tokens": prompt,
        "output_tokens": {"dist": "fitted", "source": v.output_source},
        "sla": {"ttft_s": sla.ttft_s, "tpot_s": sla.tpot_s, "attainment_target": sla.attainment_target},
        "residency": {"allowed_jurisdictions": list(v.allowed_jurisdictions) if v.allowed_jurisdictions else None,
                      "required_certifications": list(v.required_certifications)},
    }
    w.update(overrides)
    return w
