"""The scenario: a typed, validated description of one simulation run.

Scenarios are TOML files loaded into :class:`Scenario`.  Validation happens here, at the
boundary; the rest of the package trusts the objects it gets.  Every field carries a
description; ``sovsim schema`` prints them as a reference table.

A bad field raises :class:`ScenarioError` whose message is one line naming the field and
what is allowed.
"""
from __future__ import annotations

import difflib
import functools
import tomllib
import types
import typing
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from sim.demand import distributions as dist
from sim.perf import catalog
from sim.perf.profiles import FRAMEWORK_NAMES, PROFILE_NAMES as ENGINE_PROFILE_NAMES, PROFILES as ENGINE_PROFILES
from sim.perf.roofline import build_step_model, check_parallelism
from sim.core.errors import UserError
from sim.scenario.certification import PlannedCertificationSpec
from sim.scenario.market import MarketSpec
from sim.scenario.rules import RULE, fail
from sim.demand import verticals as demand
from sim.demand.arrivals import ClosedLoopProcess, MarkovBurst, NHPPProcess, OfflineProcess, PoissonProcess, TraceReplayProcess
from sim.demand.traces import load_trace
from sim.demand.verticals import PROFILE_NAMES, length_distribution, trace_path


class ScenarioError(UserError):
    """A scenario (file or field) is invalid. ``str(err)`` is one line for the user."""


class Spec(BaseModel):
    """Base of every schema block: unknown fields are errors, values are immutable, numbers
    are finite and strict (no string or boolean is converted into a number; an integer is
    accepted where a float is expected)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _plain_values(cls, data: Any) -> Any:
        return plain_values(data)


def plain_values(data: Any) -> Any:
    """numpy scalars to Python numbers and tuples to lists (programs build scenarios from
    computed values; strict validation would refuse those types, not their values)."""
    if isinstance(data, dict):
        return {k: _plain(v) for k, v in data.items()}
    return data


def _plain(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, tuple):
        return [_plain(x) for x in v]
    if isinstance(v, list):
        return [_plain(x) for x in v]
    return v


# Absurd-size bounds: far beyond any real value, so a typo (1e9 for 16) is refused with the
# range instead of reaching numpy or the engine. assumption (not physical limits).
MAX_TOKENS = 1 << 24          # token counts and lengths (16.8 M; the longest context windows are ~1 M)
MAX_LOG_TOKENS = 20.0         # lognormal mu bound: exp(20) = 4.9e8 tokens before the clip
MAX_SIGMA = 10.0              # lognormal sigmas (lengths, repair times, contract sizes)
MAX_EUR = 1e9                 # any single price or capex, EUR
MAX_POWER_W = 1e5             # draw of one GPU with its host share, W

# ISO 3166-1 alpha-2 codes (officially assigned, ISO 3166 Maintenance Agency, 249 codes)
ISO_3166_ALPHA2 = frozenset("""
AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ BR BS
BT BV BW BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM DO DZ EC EE
EG EH ER ES ET FI FJ FK FM FO FR GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW GY HK HM
HN HR HT HU ID IE IL IM IN IO IQ IR IS IT JE JM JO JP KE KG KH KI KM KN KP KR KW KY KZ LA LB LC
LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH MK ML MM MN MO MP MQ MR MS MT MU MV MW MX MY MZ NA
NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM PN PR PS PT PW PY QA RE RO RS RU RW
SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ TC TD TF TG TH TJ TK TL TM TN TO
TR TT TV TW TZ UA UG UM US UY UZ VA VC VE VG VI VN VU WF WS YE YT ZA ZM ZW
""".split())


def check_jurisdiction(code: str) -> str:
    if code in ISO_3166_ALPHA2:
        return code
    if code.upper() in ISO_3166_ALPHA2:
        raise ValueError(f"{code!r} is not an upper-case ISO 3166 alpha-2 code; allowed: {code.upper()!r}")
    raise ValueError(f"{code!r} is not an ISO 3166 alpha-2 country code; allowed: upper-case codes such as FR, DE, NL, IT")


# ------------------------------------------------------------------ distributions
class ConstantLength(Spec):
    dist: Literal["constant"] = Field(description="Every request has the same length.")
    value: int = Field(ge=1, le=MAX_TOKENS, description="Tokens.")

    def build(self) -> dist.Distribution:
        return dist.Constant(self.value)


class GeometricLength(Spec):
    dist: Literal["geometric"] = Field(description="Geometric on {1, 2, ...} (memoryless: one stop chance per token).")
    mean: float = Field(ge=1.0, le=MAX_TOKENS, description="Mean tokens (= 1/p).")

    def build(self) -> dist.Distribution:
        return dist.Geometric(self.mean)


class UniformLength(Spec):
    dist: Literal["uniform"] = Field(description="Uniform integers in [low, high].")
    low: int = Field(ge=1, le=MAX_TOKENS, description="Smallest length, tokens.")
    high: int = Field(ge=1, le=MAX_TOKENS, description="Largest length, tokens (inclusive).")

    @model_validator(mode="after")
    def _order(self):
        if self.high < self.low:
            fail("high", f"{self.high} is below low ({self.low})", f"high >= low")
        return self

    def build(self) -> dist.Distribution:
        return dist.UniformInt(self.low, self.high)


class LogNormalLength(Spec):
    dist: Literal["lognormal"] = Field(description="ceil(lognormal(mu, sigma)), clipped to [1, max].")
    mu: float = Field(ge=-MAX_LOG_TOKENS, le=MAX_LOG_TOKENS, description="Mean of log(tokens).")
    sigma: float = Field(gt=0.0, le=MAX_SIGMA, description="Standard deviation of log(tokens).")
    max: int = Field(default=1 << 20, ge=1, le=MAX_TOKENS, description="Upper clip, tokens. Run setting (default: effectively no clip).")

    def build(self) -> dist.Distribution:
        return dist.LogNormalInt(self.mu, self.sigma, self.max)


class EmpiricalLength(Spec):
    dist: Literal["empirical"] = Field(description="Resample the listed values with replacement.")
    values: list[Annotated[int, Field(ge=1, le=MAX_TOKENS)]] = Field(min_length=1, description="Observed token counts.")

    def build(self) -> dist.Distribution:
        return dist.Empirical(tuple(self.values))


class FittedLength(Spec):
    dist: Literal["fitted"] = Field(
        description="A length law fitted on a production trace by `sovsim fit-demand` (models/demand/length_fits.json; "
                    "GOF table in models/demand/length_gof.csv).")
    source: Literal["azure-code-prompt", "azure-code-output", "azure-conv-prompt", "azure-conv-output",
                    "mooncake-conv-prompt", "mooncake-conv-output"] = Field(
        description="Trace and column: Azure LLM inference 2023 code/conv services (CC-BY 4.0) or Mooncake conversation "
                    "trace (Apache-2.0), prompt or output tokens; see models/traces/*/PROVENANCE.md.")
    family: Literal["best", "lognormal", "gamma", "weibull", "negbinom", "empirical"] = Field(
        default="best",
        description="best: the family with the lowest AIC in the fit; a named family; or empirical (resample the trace's values).")
    max: int | None = Field(default=None, ge=1, le=MAX_TOKENS, description="Re-clip to this many tokens (e.g. a model's context window); default: the trace's maximum.")

    def build(self) -> dist.Distribution:
        return length_distribution(self.source, self.family, self.max)


LengthSpec = Annotated[
    Union[ConstantLength, GeometricLength, UniformLength, LogNormalLength, EmpiricalLength, FittedLength],
    Field(discriminator="dist"),
]


# ------------------------------------------------------------------ admission control
# Bounded queues and load shedding; every default keeps admission unbounded.  Requests moved
# off a failed or retired replica are requeued regardless (admission applies to arrivals).
class _BatchingAdmission(Spec):
    max_waiting: int | None = Field(
        default=None, ge=0, strict=True,
        description="Most requests that may wait at one replica (routed there, not yet in its running batch); an arrival the router sends to a replica already holding this many is rejected with reason queue_full. None: unbounded. assumption: unbounded (no admission limit).")


class _RouterAdmission(Spec):
    max_queue: int | None = Field(
        default=None, ge=0, strict=True,
        description="central_queue only: most requests that may wait in a workload's FCFS queue at the router; an arrival that finds it full is rejected with reason queue_full (0 with max_num_seqs = 1 is Erlang B's loss system M/M/c/c; K - c is M/M/c/K). None: unbounded. assumption: unbounded (no admission limit).")
    ttft_shed_s: float | None = Field(
        default=None, gt=0.0, allow_inf_nan=False, strict=True,
        description="Reject an arrival with reason ttft_shed when its predicted TTFT exceeds this, seconds. Predicted TTFT: network round trip to the replica the router chose plus the step model's time to prefill, in one iteration with no decodes, the prompt tokens still to prefill there after the iteration in progress (admitted or waiting) and its own: a lower bound, so only requests that would miss the bound even at the replica's best are shed (under slot-bound load most of the real TTFT is the wait for a sequence slot, which it leaves out). Not with central_queue (bound its queue with max_queue). None: no shedding. assumption: off.")

    @model_validator(mode="after")
    def _admission_policy(self):
        if self.policy != "central_queue" and self.max_queue is not None:
            raise ValueError(f"router.max_queue applies to policy central_queue only (policy is {self.policy}); bound replica queues with deployments.N.batching.max_waiting")
        if self.policy == "central_queue" and self.ttft_shed_s is not None:
            raise ValueError("router.ttft_shed_s needs a policy that picks a replica at arrival (least_outstanding, power_of_two, round_robin); with central_queue bound the queue with router.max_queue")
        return self


# ------------------------------------------------------------------ blocks
class SimulationSpec(Spec):
    horizon_s: float = Field(default=3600.0, gt=0.0, description="Simulated time, seconds. Run setting.")
    warmup_s: float = Field(default=0.0, ge=0.0, description="Requests arriving before this time are served but left out of latency statistics. Run setting.")
    seed: int = Field(default=1, ge=0, lt=2**63, description="Root seed of the run's SeedSequence (overridden by --seed). Run setting.")
    engine_mode: Literal["event_skipping", "per_iteration"] = Field(
        default="event_skipping",
        description="event_skipping: one event per batch-composition change (fast); per_iteration: one event per iteration (reference).")
    request_sample_size: int = Field(default=20000, ge=0, le=10_000_000, description="Per-request records kept (uniform reservoir sample over the run). Run setting.")
    timeseries_interval_s: float = Field(default=60.0, gt=0.0, description="Width of the time-series bins, seconds. Run setting.")


class BatchingSpec(_BatchingAdmission):
    max_num_seqs: int = Field(default=256, ge=1, le=65536, description="Cap on running sequences per replica (vLLM max_num_seqs). Source: vLLM default 256.")
    max_batched_tokens: int = Field(default=8192, ge=1, le=MAX_TOKENS, description="Per-iteration token budget: decode tokens plus prefill chunk tokens (vLLM max_num_batched_tokens). assumption: 8192, a common chunked-prefill setting.")
    block_size_tokens: int = Field(default=16, ge=1, le=1024, description="Paged KV-cache block size, tokens. Source: vLLM default 16.")
    gpu_memory_utilization: float = Field(default=0.9, gt=0.0, le=1.0, description="Share of GPU memory the engine may use (weights + KV). Source: vLLM default 0.9.")
    chunked_prefill: bool = Field(default=True, description="Split long prompts across iterations under the token budget; if false a prompt is prefilled whole (it may exceed the budget alone). Source: vLLM V1 enables chunked prefill by default.")
    kv_admission: Literal["greedy", "reserve_full_output"] = Field(
        default="greedy",
        description="greedy: admit a request when its prompt's KV blocks fit now, preempt the newest running sequence (recompute) when a decode finds no free block (vLLM V1; TensorRT-LLM MAX_UTILIZATION); reserve_full_output: admit only when KV for the prompt and the whole output fits beside every running request's reservation, never preempt (TensorRT-LLM GUARANTEED_NO_EVICT). Source: vLLM V1 preempts by recompute.")


CONSTANT_ONLY = ("decode_step_s", "prefill_per_token_s", "per_kv_token_s", "window_tokens")


class StepTimeSpec(Spec):
    kind: Literal["calibrated", "roofline", "constant"] = Field(
        default="calibrated",
        description="calibrated: roofline with efficiencies fitted to GPU measurements (sim.perf); roofline: datasheet ceilings only; constant: fixed iteration time (queueing validation).")
    decode_step_s: float | None = Field(default=None, gt=0.0, le=3600.0, description="constant only: time of an iteration that carries decodes, seconds.")
    prefill_per_token_s: float = Field(default=0.0, ge=0.0, le=60.0, description="constant only: added time per prefill token, seconds. Run setting (validation model).")
    per_kv_token_s: float = Field(default=0.0, ge=0.0, le=60.0, description="constant only: added time per attended KV token, seconds. Run setting (validation model).")
    kv_cache_tokens: int | None = Field(default=None, ge=1, le=1 << 40, description="Override the KV-cache capacity of a replica, tokens (default: derived from GPU memory minus weights).")
    window_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS, description="constant only: sliding attention window, tokens (per_kv_token_s applies to at most this many tokens per sequence).")
    framework: Literal[FRAMEWORK_NAMES] | None = Field(
        default=None,
        description="calibrated only: the step-time framework profile (models/calibration/<gpu>.json, docs/perf.md): the serving software's fitted CPU overheads and kernel-time scale. trtllm-v0.14 / trtllm-v0.17 / trtllm-v1.0: that TensorRT-LLM release (perf-overview tables); trtllm: the default (v0.17 fit); vllm: the vLLM fit. None: the engine profile's framework, else the default. assumption: None.")

    @model_validator(mode="after")
    def _constant_needs_step(self):
        if self.kind == "constant" and self.decode_step_s is None:
            fail("decode_step_s", "kind = 'constant' needs it", "seconds, > 0")
        if self.framework is not None and self.kind != "calibrated":
            fail("framework", f"applies to kind = 'calibrated' only, not {self.kind!r}",
                 "leave it out, or kind = 'calibrated'")
        if self.kind != "constant":
            for name in CONSTANT_ONLY:
                if getattr(self, name) != type(self).model_fields[name].default:
                    fail(name, f"applies to kind = 'constant' only, not {self.kind!r}",
                         f"leave it out, or kind = 'constant'")
        return self


# ------------------------------------------------------------------ economics
# Defaults live in sim.economics.contracts.DEFAULTS (value, unit, source or `assumption`); a field left
# None here takes that default. models/economics/README.md is the readable table.
class _ContractTerms(Spec):
    name: str = Field(min_length=1, description="Label of this contract (unique within the site).")
    gpus: int = Field(ge=0, le=1 << 20, description="GPUs under this contract at the start of the run.")
    lead_time_s: float | None = Field(default=None, ge=0.0, le=1e10, description="Time from ordering more GPUs on these terms to their arrival, seconds (None: default per kind, see models/economics/README.md).")
    min_term_s: float | None = Field(default=None, ge=0.0, description="Minimum time a tranche is billed once it starts, seconds (None: default per kind).")
    notice_s: float | None = Field(default=None, ge=0.0, description="Notice between asking to release a tranche and the end of billing, seconds (None: default per kind).")


class RentalContractSpec(_ContractTerms):
    kind: Literal["rental"] = Field(description="GPU rental by the GPU-hour from a cloud provider.")
    term: Literal["on_demand", "committed"] = Field(default="on_demand", description="on_demand: billed per second used; committed: a term at a discount.")
    price_eur_per_gpu_h: float | None = Field(default=None, gt=0.0, le=MAX_EUR, description="On-demand list price, EUR per GPU-hour (None: Scaleway H100-SXM-8-80G EUR 25.3308/h / 8, models/economics/gpu_prices.csv).")
    committed_discount: float | None = Field(default=None, ge=0.0, lt=1.0, description="committed only: discount on the list price (None: 0.26, DigitalOcean 12-month reserve, gpu_prices.csv).")

    @model_validator(mode="after")
    def _discount_needs_commitment(self):
        if self.term != "committed" and self.committed_discount is not None:
            fail("committed_discount", f"applies to term = 'committed' only, not {self.term!r}",
                 "leave it out, or term = 'committed'")
        return self


class OwnedColoContractSpec(_ContractTerms):
    kind: Literal["owned_colo"] = Field(description="Own servers in leased co-location: depreciation + colocation + metered power.")
    capex_eur_per_gpu: float | None = Field(default=None, gt=0.0, le=MAX_EUR, description="Purchase price per GPU incl. its host share, EUR (None: EUR 34,077.50, one H100 SXM's share of an 8-GPU HGX server quoted at USD 317,000 with its host x 0.86 EUR/USD; gpu_prices.csv and fx.csv).")
    life_years: float | None = Field(default=None, gt=0.0, le=100.0, description="Straight-line depreciation life, years (None: 4, assumption).")
    colo_eur_per_kw_month: float | None = Field(default=None, ge=0.0, le=MAX_EUR, description="Colocation rent per contracted kW per month, EUR (None: 155, midpoint of Frankfurt 130-180, colocation.csv, tertiary).")
    colo_kw_per_gpu: float | None = Field(default=None, gt=0.0, le=MAX_POWER_W / 1000.0, description="Contracted power per GPU, kW (None: DGX H100 max 10.2 kW / 8, power.csv).")
    power_eur_per_kwh: float | None = Field(default=None, ge=0.0, le=1000.0, description="Electricity price, EUR/kWh (None: by the site's jurisdiction, FR 0.1534 / DE 0.178 / else EU-27 0.2179, electricity.csv).")
    pue: float | None = Field(default=None, ge=1.0, le=10.0, description="Power usage effectiveness of the colo (None: 1.58, power.csv colocation range 1.58-1.80).")
    busy_w_per_gpu: float | None = Field(default=None, ge=0.0, le=MAX_POWER_W, description="Draw of a GPU with its host share while its replica has a non-empty batch, W (None: DGX H100 typical 7.5 kW / 8, power.csv).")
    idle_w_per_gpu: float | None = Field(default=None, ge=0.0, le=MAX_POWER_W, description="Draw of an idle GPU with its host share, W (None: 60, measured 2x H100 NVL server idle 120 W / 2, power.csv).")

    @model_validator(mode="after")
    def _power_order(self):
        if self.busy_w_per_gpu is not None and self.idle_w_per_gpu is not None \
                and self.busy_w_per_gpu < self.idle_w_per_gpu:
            fail("busy_w_per_gpu", f"{self.busy_w_per_gpu:g} W is below idle_w_per_gpu ({self.idle_w_per_gpu:g} W)",
                 "busy_w_per_gpu >= idle_w_per_gpu")
        return self


class PartnerReservedContractSpec(_ContractTerms):
    kind: Literal["partner_reserved"] = Field(description="Reserved capacity on a partner cloud, billed monthly.")
    price_eur_per_gpu_h: float | None = Field(default=None, gt=0.0, le=MAX_EUR, description="EUR per GPU-hour (None: OVHcloud h100-380 monthly billing EUR 1,940 / 730 h, gpu_prices.csv).")


ContractSpec = Annotated[Union[RentalContractSpec, OwnedColoContractSpec, PartnerReservedContractSpec],
                         Field(discriminator="kind")]


class SLACreditTier(Spec):
    below_attainment: float = Field(gt=0.0, le=1.0, description="The tier applies when the month's SLA attainment of a workload is under this share.")
    credit_share: float = Field(ge=0.0, le=1.0, description="Share of that workload's month revenue credited back.")


class PricingSpec(Spec):
    vertical: str = Field(default="*", description="Buyer vertical this price applies to ('*' = any).")
    model: str = Field(default="*", description="LLM catalog id this price applies to ('*' = any).")
    workload: str | None = Field(default=None, description="Workload name (overrides vertical/model matching).")
    input_eur_per_mtok: float = Field(ge=0.0, le=MAX_EUR, description="Price of one million prompt tokens, EUR.")
    output_eur_per_mtok: float = Field(ge=0.0, le=MAX_EUR, description="Price of one million output tokens, EUR.")
    sla_credits: list[SLACreditTier] | None = Field(default=None, description="Credit tiers; the deepest tier that applies is paid (None: 10% under the workload's attainment target, 25% under 0.95; assumption).")


class FaultsSpec(Spec):
    enabled: bool = Field(default=False, description="Run setting: inject GPU, node and site failures (off by default so runs without a [faults] block are unchanged).")
    gpu_failures_per_gpu_day: float | None = Field(default=None, ge=0.0, description="Failure rate of one GPU (fails its replica), per day (None: GPU-attributed rows of the Llama 3 interruption table, 268 / (16,384 x 54) = 3.03e-4; see docs/economics.md).")
    node_failures_per_node_day: float | None = Field(default=None, ge=0.0, description="Failure rate of one node (fails all its replicas), per day (None: host + network + unplanned-maintenance rows of the Llama 3 table, 88 / (2,048 x 54) = 7.96e-4).")
    gpus_per_node: int = Field(default=8, ge=1, le=1024, description="GPUs per node; replicas are packed onto nodes in order. Source: DGX/HGX H100 has 8.")
    repair_median_s: float = Field(default=4 * 3600.0, gt=0.0, description="Median repair time, seconds (lognormal). assumption: 4 h (swap or reboot; no MTTR recorded in models/economics).")
    repair_sigma: float = Field(default=1.0, gt=0.0, le=MAX_SIGMA, description="Lognormal sigma of repair times. assumption.")
    site_outages_per_year: float = Field(default=0.5, ge=0.0, description="Whole-site outage rate per site, per year. assumption (no figure recorded).")
    site_outage_median_s: float = Field(default=4 * 3600.0, gt=0.0, description="Median whole-site outage, seconds (lognormal, sigma 1). assumption.")
    requeue: Literal["preserve", "recompute"] = Field(default="preserve", description="Requests on a failed replica are requeued keeping their emitted tokens (preserve) or restarting generation (recompute).")


class CapacityPolicySpec(Spec):
    kind: Literal["fixed", "threshold", "forecast"] = Field(default="fixed", description="fixed: the contracts' GPUs only; threshold: order/release on request utilisation and queueing; forecast: order lead-time ahead of the workloads' expected demand. Replicas are added as GPUs arrive and drained before they leave (docs/economics.md).")
    contract: str | None = Field(default=None, description="Name of the contract whose terms new orders use (None: the first contract of the site; a site without contracts orders on-demand rental).")
    deployment: str | None = Field(default=None, description="Deployment whose replicas are added on new GPUs (None: at each site, its deployment with the most outstanding work per replica when the GPUs arrive).")
    max_queue_per_replica: float = Field(default=4.0, ge=0.0, description="threshold: also order when more requests than this wait (unadmitted, or parked at the router) per accepting replica at the site. assumption.")
    drain_s: float = Field(default=600.0, ge=0.0, description="A released tranche stays at least this long after the release decision so its replicas finish what they hold (no new requests meanwhile); anything left then is migrated with its emitted tokens. assumption: 10 min, far above end-to-end latencies of the default workloads.")
    check_interval_s: float = Field(default=3600.0, gt=0.0, description="How often the policy looks, seconds. assumption.")
    high_utilisation: float = Field(default=0.8, gt=0.0, le=1.0, description="threshold: order when the site's request utilisation (requests completed / what its replicas could complete at full batch for the site's length mix, docs/metrics.md) since the last look is above this. assumption.")
    low_utilisation: float = Field(default=0.3, ge=0.0, lt=1.0, description="threshold: release a tranche when request utilisation is below this and nothing waits. assumption.")
    step_gpus: int = Field(default=8, ge=1, le=1 << 20, description="GPUs per order or release (one node). assumption.")
    min_gpus: int = Field(default=0, ge=0, le=1 << 20, description="Run setting: never release below this many GPUs at a site.")
    max_gpus: int = Field(default=1 << 20, ge=1, le=1 << 20, description="Run setting: never order above this many GPUs at a site (default: no cap).")
    headroom: float = Field(default=0.2, ge=0.0, description="forecast: capacity kept above forecast demand (share). assumption.")


class SiteSpec(Spec):
    name: str = Field(min_length=1, description="Site label, e.g. par-1.")
    jurisdiction: str = Field(description="ISO 3166 alpha-2 country code of the site, upper case (FR, DE, NL, IT, ...).")
    certifications: list[str] = Field(default_factory=list, description="Certifications the site holds at t = 0 (SecNumCloud, BSI-C5, HDS, ISO27001, ...); in a forecast each costs its yearly fee (market.compliance.certifications) and gates buyers (docs/market.md, Compliance).")
    planned_certifications: list[PlannedCertificationSpec] = Field(default_factory=list, description="Certifications the site starts to obtain during a forecast: one-off cost from start_month, held after the certification's months_to_obtain (docs/market.md, Compliance). Run setting.")
    colo_owner: Literal["eu", "us"] = Field(default="eu", description="Who owns the colocation (supply-chain sovereignty): us lowers the sovereign offer's fit for the strictest buyers by market.compliance.supply_chain's penalty. assumption: eu.")
    gpu_origin: Literal["eu", "us", "other"] = Field(default="us", description="Where the site's GPUs are designed and sourced (supply-chain sovereignty; penalty in market.compliance.supply_chain). assumption: us (NVIDIA), as every offer in the market.")
    network_latency_s: dict[str, Annotated[float, Field(ge=0.0, le=60.0)]] = Field(
        default_factory=dict,
        description="One-way network latency from each buyer region (key) to this site, seconds; added to TTFT. Missing region: 0.")
    contracts: list[ContractSpec] = Field(default_factory=list, description="Capacity contracts at this site (rental, owned_colo, partner_reserved). Empty: deployments here are costed as on-demand rental.")

    @field_validator("jurisdiction")
    @classmethod
    def _iso(cls, v):
        return check_jurisdiction(v)


class ResidencySpec(Spec):
    allowed_jurisdictions: list[str] | None = Field(default=None, description="Country codes where this stream's data may be processed; None = anywhere.")
    required_certifications: list[str] = Field(default_factory=list, description="Certifications a site must hold to serve this stream.")

    @field_validator("allowed_jurisdictions")
    @classmethod
    def _iso(cls, v):
        if v is not None:
            for code in v:
                check_jurisdiction(code)
        return v


class DeploymentSpec(Spec):
    name: str = Field(min_length=1, description="Label of this pool of identical replicas.")
    site: str | None = Field(default=None, description="Name of the site (see [[sites]]) hosting these replicas; None = an unnamed site with no jurisdiction.")
    model: str = Field(description="LLM catalog id (see `sovsim catalog`), e.g. mixtral-8x7b.")
    gpu: str = Field(default="h100-sxm", description="GPU catalog id, e.g. h100-sxm. assumption: H100 SXM, the most offered GPU at EU providers (see models/README.md).")
    precision: Literal["bf16", "fp16", "fp8"] = Field(default="fp8", description="Weight and KV-cache precision. assumption: fp8, as in most published H100/H200 serving results.")
    tp: int = Field(default=1, ge=1, le=64, description="Tensor-parallel GPUs per replica. assumption: 1 unless the model needs more memory.")
    ep: int = Field(default=1, ge=1, le=64, description="Expert-parallel groups of a MoE replica: the routed experts are dealt whole over ep groups of tp/ep GPUs (must divide tp; 1 = every expert split over the tp GPUs). GPUs per replica stay tp. assumption: 1.")
    attention_dp: bool = Field(default=False, description="Attention data parallelism (needs ep = tp): every GPU of the replica runs attention for its own share of the sequences with replicated attention weights, and each MoE layer exchanges tokens by all-to-all (dispatch and combine), as SGLang/TensorRT-LLM serve DeepSeek-class models. assumption: false.")
    replicas: int = Field(default=1, ge=0, le=1 << 20, description="Number of replicas (GPUs used = replicas x tp). Run setting.")
    batching: BatchingSpec = Field(default_factory=BatchingSpec, description="Continuous-batching settings.")
    step_time: StepTimeSpec = Field(default_factory=StepTimeSpec, description="Which iteration-time model to use.")
    profile: Literal[ENGINE_PROFILE_NAMES] | None = Field(
        default=None,
        description="Engine profile (sim/perf/profiles.py, docs/perf.md): the serving software's batching defaults (max_num_seqs, max_batched_tokens, block size, memory share, chunked prefill, kv_admission) for every batching field left unset, and its fitted step-time framework overheads. vllm: vLLM V1 server defaults; trtllm-max-utilization / trtllm-guaranteed-no-evict: TensorRT-LLM in-flight batching with that capacity-scheduler policy. None: the scenario defaults and the calibration's default framework profile. assumption: None.")

    @model_validator(mode="before")
    @classmethod
    def _profile_defaults(cls, data: Any) -> Any:
        """A named profile fills the batching fields the deployment leaves unset."""
        if not isinstance(data, dict) or data.get("profile") is None or data["profile"] not in ENGINE_PROFILES:
            return data
        gpu = data.get("gpu", cls.model_fields["gpu"].default)
        if not isinstance(gpu, str) or gpu not in catalog.gpus():
            return data   # the unknown GPU is reported by _catalog
        batching = data.get("batching", {})
        if isinstance(batching, BatchingSpec):
            batching = {k: getattr(batching, k) for k in batching.model_fields_set}
        if not isinstance(batching, dict):
            return data
        filled = dict(ENGINE_PROFILES[data["profile"]].batching(catalog.gpu(gpu)))
        filled.update(batching)
        return {**data, "batching": filled}

    @model_validator(mode="after")
    def _catalog(self):
        if self.gpu not in catalog.gpus():
            fail("gpu", f"unknown GPU {self.gpu!r}", ", ".join(catalog.gpus()))
        if self.step_time.kind == "constant":
            return self   # the validation model: the model id is a label, no memory model
        if self.model not in catalog.llms():
            fail("model", f"unknown model {self.model!r}", ", ".join(catalog.llms()))
        m = catalog.llm(self.model)
        if m.heads % self.tp:
            ok = [t for t in range(1, min(m.heads, 64) + 1) if m.heads % t == 0]
            fail("tp", f"{self.tp} does not divide the {m.heads} attention heads of {self.model}",
                 ", ".join(str(t) for t in ok))
        try:
            check_parallelism(m, self.tp, self.ep, self.attention_dp)
        except UserError as err:
            raise ValueError(str(err).removeprefix("deployment: ")) from None
        self._check_memory()
        return self

    def _check_memory(self):
        """Weights + activation reserve + the KV cache must fit in the GPUs' usable memory."""
        try:
            pm = build_step_model(self)
        except UserError as err:
            raise ValueError(f"{err}") from None
        kv = self.step_time.kv_cache_tokens
        if kv is not None:
            g = catalog.gpu(self.gpu)
            free = self.tp * (g.memory_bytes * self.batching.gpu_memory_utilization
                              - pm.weight_bytes_per_gpu - pm.reserve_bytes_per_gpu)
            most = int(free // pm.kv_bytes_per_token)
            if kv > most:
                fail("step_time.kv_cache_tokens",
                     f"{kv:,} tokens of KV cache need {kv * pm.kv_bytes_per_token / 2**30:.1f} GB but deployment "
                     f"{self.name!r} ({self.model} {self.precision} tp={self.tp} on {self.gpu}) has "
                     f"{max(free, 0) / 2**30:.1f} GB left after weights and reserve", f"at most {most:,} tokens")

    @property
    def gpus(self) -> int:
        return self.replicas * self.tp


class RouterSpec(_RouterAdmission):
    policy: Literal["least_outstanding", "power_of_two", "round_robin", "central_queue"] = Field(
        default="least_outstanding",
        description="least_outstanding: fewest outstanding tokens (prompt + output of assigned, unfinished requests); power_of_two: the less loaded of two random eligible replicas; round_robin; central_queue: requests wait at the router (FCFS) until an eligible replica has a free sequence slot, then go to the least loaded such replica (with max_num_seqs = 1 this is exactly M/M/c).")
    max_wait_s: float = Field(default=60.0, ge=0.0, le=1e9, description="How long a request waits when no eligible replica is up before it is rejected with reason no_eligible_capacity. assumption.")


class SLASpec(Spec):
    ttft_s: float = Field(default=2.0, gt=0.0, description="Time-to-first-token target, seconds. Source: MLPerf Inference Server constraint for Llama-2-70B (2 s).")
    tpot_s: float = Field(default=0.2, gt=0.0, description="Time-per-output-token target, seconds. Source: MLPerf Inference Server constraint for Llama-2-70B (200 ms).")
    attainment_target: float = Field(default=0.99, gt=0.0, le=1.0, description="Share of requests that must meet both targets. Source: MLPerf Server uses the 99th percentile.")


class PoissonArrivals(Spec):
    kind: Literal["poisson"] = Field(description="Homogeneous Poisson arrivals.")
    rate_per_s: float = Field(gt=0.0, description="Mean requests per second.")

    def build(self):
        return PoissonProcess(self.rate_per_s)


class OfflineArrivals(Spec):
    kind: Literal["offline"] = Field(description="All requests arrive at t = 0 (trtllm-bench / MLPerf Offline style).")
    count: int = Field(ge=1, le=1 << 40, description="Number of requests.")

    def build(self):
        return OfflineProcess(self.count)


class ClosedLoopArrivals(Spec):
    kind: Literal["closed_loop"] = Field(description="N concurrent users (AIPerf / NIM concurrency sweeps): each sends its next request when its previous one completes or is rejected, after an optional think time.")
    users: int = Field(ge=1, le=1 << 20, description="Concurrent users (requests in flight from the client's view).")
    think_time_s: float = Field(default=0.0, ge=0.0, le=1e9, description="Mean think time between a user's completion and its next request, seconds (exponential; 0 = none, as AIPerf's concurrency mode). Run setting.")

    def build(self):
        return ClosedLoopProcess(self.users, self.think_time_s)


class BurstSpec(Spec):
    multiplier: float = Field(ge=1.0, le=1e4, description="Rate in the burst state relative to the normal state (both scaled so the mean rate is unchanged). "
                                                  "Fitted values: models/demand/burst.json.")
    mean_burst_s: float = Field(gt=0.0, description="Mean duration of a burst, seconds (exponential sojourn).")
    mean_gap_s: float = Field(gt=0.0, description="Mean time between bursts, seconds (exponential sojourn).")

    def build(self):
        return MarkovBurst(self.multiplier, self.mean_burst_s, self.mean_gap_s)


class NHPPArrivals(Spec):
    kind: Literal["nhpp"] = Field(description="Non-homogeneous Poisson arrivals with an hour-of-week profile (thinning), optionally Markov-modulated bursts.")
    rate_per_s: float = Field(gt=0.0, description="Long-run mean requests per second (the profile and burst state have mean 1).")
    profile: Union[str, list[float]] = Field(
        default="general",
        description="Named profile (azure-code / azure-conv: fitted on Azure LLM inference 2024 per-minute counts; the verticals: "
                    "documented transformations of azure-conv, see docs/demand.md) or 168 hour-of-week multipliers "
                    "(Monday 00 UTC first; normalised to mean 1).")
    start_hour_of_week: float = Field(default=0.0, ge=0.0, lt=168.0,
                                      description="Hour of week at t = 0 (0 = Monday 00:00 UTC). assumption: runs start on Monday midnight.")
    burst: Union[BurstSpec, str, None] = Field(
        default=None,
        description="Optional two-state burst modulation (MMPP): a fitted one by name (models/demand/burst.json) or explicit values; None = plain NHPP.")

    @field_validator("profile")
    @classmethod
    def _check_profile(cls, v):
        if isinstance(v, str):
            if v not in PROFILE_NAMES:
                raise ValueError(f"{v!r} is not a fitted profile; allowed: {', '.join(PROFILE_NAMES)} or a list of 168 multipliers")
        elif len(v) != 168:
            raise ValueError(f"needs 168 hour-of-week multipliers (Monday 00 UTC first), got {len(v)}")
        elif any(not (x >= 0) or x == float("inf") for x in v) or sum(v) <= 0:
            raise ValueError("multipliers must be finite, >= 0 and not all 0")
        return v

    @field_validator("burst")
    @classmethod
    def _check_burst(cls, v):
        if isinstance(v, str) and v not in ("azure-code", "azure-conv"):
            raise ValueError(f"{v!r} is not a fitted burst state; allowed: azure-code, azure-conv or a table "
                             "{multiplier, mean_burst_s, mean_gap_s}")
        return v

    def build(self):
        prof = demand.profile(self.profile) if isinstance(self.profile, str) else self.profile
        if self.burst is None:
            b = None
        elif isinstance(self.burst, str):
            b = demand.burst(self.burst)
        else:
            b = self.burst.build()
        return NHPPProcess(self.rate_per_s, tuple(float(v) for v in prof), self.start_hour_of_week, b)


class TraceArrivals(Spec):
    kind: Literal["trace"] = Field(description="Replay a CSV trace of (timestamp, prompt tokens, output tokens); lengths come from the trace.")
    path: str = Field(min_length=1, description="CSV file (relative to the working directory), or a bundled trace: azure-code, azure-conv, mooncake-conv.")
    time_scale: float = Field(default=1.0, gt=0.0, description="Multiply every arrival time by this (0.5 = twice as fast). Run setting.")
    rate_scale: float = Field(default=1.0, gt=0.0, description="Multiply the number of requests, keeping the time profile (< 1 thins, > 1 adds jittered copies). Run setting.")
    on_bad_rows: Literal["refuse", "skip"] = Field(default="refuse", description="Malformed rows: refuse (error naming the line) or skip (dropped, counted and listed in the run's report).")
    repeat: bool = Field(default=False, description="Loop the trace until the horizon (period = span + one mean gap). Run setting.")

    def build(self):
        return TraceReplayProcess(_cached_trace(trace_path(self.path), self.on_bad_rows), self.time_scale, self.rate_scale, self.repeat)


def _cached_trace(path, on_bad_rows: str):
    """The trace at ``path``, read once per file version (the work estimate and the run both
    build the replay; skipped rows are warned about once)."""
    p = Path(path)
    try:
        st = p.stat()
        key = (str(p.resolve()), st.st_mtime_ns, st.st_size, on_bad_rows)
    except OSError:
        return load_trace(p, on_bad_rows)   # load_trace words the error
    return _load_trace_cached(key)


@functools.lru_cache(maxsize=8)
def _load_trace_cached(key):
    return load_trace(key[0], key[3])


ArrivalSpec = Annotated[Union[PoissonArrivals, OfflineArrivals, ClosedLoopArrivals, NHPPArrivals, TraceArrivals], Field(discriminator="kind")]


class WorkloadSpec(Spec):
    name: str = Field(min_length=1, description="Label of this request stream (a tenant).")
    model: str = Field(description="LLM catalog id the requests ask for; routed only to deployments serving it.")
    arrivals: ArrivalSpec = Field(description="Arrival process.")
    prompt_tokens: LengthSpec | None = Field(default=None, description="Prompt length distribution (required unless arrivals.kind = 'trace', whose rows carry lengths).")
    output_tokens: LengthSpec | None = Field(default=None, description="Output length distribution (tokens generated, >= 1; required unless arrivals.kind = 'trace').")
    sla: SLASpec = Field(default_factory=SLASpec, description="Latency targets of this stream.")
    vertical: str = Field(default="general", description="Buyer vertical (finance, healthcare, public_sector, general). Label.")
    region: str = Field(default="eu", description="Buyer region; keys the sites' network_latency_s. Label.")
    residency: ResidencySpec = Field(default_factory=ResidencySpec, description="Where this stream may be served; a request is never served elsewhere.")

    @model_validator(mode="after")
    def _lengths(self):
        if self.arrivals.kind != "trace":
            for f in ("prompt_tokens", "output_tokens"):
                if getattr(self, f) is None:
                    raise ValueError(f"{f} is required (only arrivals.kind = 'trace' carries its own lengths)")
        else:
            for f in ("prompt_tokens", "output_tokens"):
                if getattr(self, f) is not None:
                    raise ValueError(f"{f} must be left out with arrivals.kind = 'trace' (the trace's rows give the lengths)")
        return self


class ForecastSpec(Spec):
    months: int = Field(default=36, ge=1, le=240, description="Months to forecast. Run setting.")
    windows_per_month: int = Field(default=12, ge=1, le=168, description="Traffic windows simulated per month, spread over the week by stratified sampling (avoid 7, 14, 21...: they alias with the day). Run setting: 12 windows of 80 s estimate the default demand's monthly requests within about 5 % (docs/forecast.md).")
    window_s: float = Field(default=80.0, gt=0.0, description="Measured length of each traffic window, seconds. Run setting (accuracy vs runtime; docs/forecast.md).")
    warmup_s: float = Field(default=20.0, ge=0.0, description="Warm-up simulated before each window and discarded, seconds. Run setting.")
    continuous: bool = Field(default=False, description="Simulate every second of every month instead of windows (slow; the reference the windows are tested against). Run setting.")
    model: str | None = Field(default=None, description="Serve every tenant with this catalog model instead of its vertical's default. Run setting.")

    @field_validator("model")
    @classmethod
    def _catalog(cls, v):
        if v is not None and v not in catalog.llms():
            raise ValueError(f"unknown model {v!r}; allowed: {', '.join(catalog.llms())}")
        return v


class CellsSpec(Spec):
    max_replicas: int | None = Field(default=None, ge=1, le=4096, description="Shard the fleet into cells of at most this many replicas, each behind its own router, with a front router splitting each workload over the cells in proportion to the GPUs it may use there (docs/cells.md). None: one router over the whole fleet. Run setting.")
    sample: int | None = Field(default=None, ge=2, description="Simulate this many cells of each group of exchangeable cells and scale, with intervals from the cell-to-cell spread; None: every cell. Run setting.")
    windows: int = Field(default=0, ge=0, le=1000, description="Estimate each cell's horizon from this many sampled windows (0: simulate it continuously). Run setting.")
    window_s: float = Field(default=300.0, gt=0.0, description="Length of one sampled window, seconds. Run setting.")
    warmup_s: float = Field(default=60.0, ge=0.0, description="Warm-up before each window, discarded, seconds. Run setting.")


def _misspelt_deployment(deployments, wanted: str, asked: set[str]) -> tuple[int | None, int | None]:
    """For a workload's model ``wanted`` that no deployment serves: (index of the deployment to
    blame, index of a deployment to mention).  A deployment that serves no workload is blamed
    when ``wanted`` is a catalog id and its own model is not (a typo under a constant step time,
    whose model id is a label); one whose model is close to ``wanted`` (difflib ratio >= 0.8) is
    mentioned otherwise."""
    idle = [(j, d) for j, d in enumerate(deployments) if d.model not in asked]
    close = [j for j, d in idle if difflib.SequenceMatcher(None, d.model, wanted).ratio() >= 0.8]
    if wanted in catalog.llms():
        wrong = [j for j, d in idle if d.model not in catalog.llms()]
        if wrong:
            return next((j for j in close if j in wrong), wrong[0]), None
    close = [j for j in close if deployments[j].model not in catalog.llms()]
    return None, (close[0] if close else None)


class Scenario(Spec):
    name: str = Field(default="scenario", description="Scenario label.")
    description: str = Field(default="", description="Free text.")
    simulation: SimulationSpec = Field(default_factory=SimulationSpec, description="Horizon, seed and engine mode.")
    router: RouterSpec = Field(default_factory=RouterSpec, description="Routing across replicas.")
    sites: list[SiteSpec] = Field(default_factory=list, description="EU co-location sites.")
    deployments: list[DeploymentSpec] = Field(min_length=1, description="Pools of replicas.")
    workloads: list[WorkloadSpec] = Field(default_factory=list, description="Request streams (at least one, unless [forecast] derives them from the market's contracts).")
    market: Union[MarketSpec, None] = Field(  # typing.Union: _unwrap walks it for error messages
        default=None,
        description="Optional customer market (RFPs, competitor offers, contracts; sim.market). Absent: no market layer. "
                    "An empty [market] table takes every default from models/market/parameters.csv (each row gives its source or 'assumption').")
    forecast: Union[ForecastSpec, None] = Field(
        default=None,
        description="Optional multi-month forecast (sim.forecast): the market runs continuously, traffic in sampled windows, tenants from the sovereign provider's contracts. `sovsim run` then prints the monthly forecast.")
    pricing: list[PricingSpec] = Field(default_factory=list, description="Tenant prices; the first matching entry (workload, then vertical+model, then wildcards) applies. None matching: the sovereign list price of models/market/parameters.csv, EUR 0.602 / 0.602 per 1M tokens (Mixtral 8x7B, 0.7 USD x 0.86 EUR/USD: api_prices.csv, fx.csv).")
    faults: FaultsSpec = Field(default_factory=FaultsSpec, description="GPU, node and site failures.")
    capacity_policy: CapacityPolicySpec = Field(default_factory=CapacityPolicySpec, description="How capacity is ordered and released over the run.")
    cells: CellsSpec = Field(default_factory=CellsSpec, description="Large fleets as cells, exactly or sampled (sim.study.cells).")

    @model_validator(mode="after")
    def _cross_checks(self):
        names = [d.name for d in self.deployments]
        if len(set(names)) != len(names):
            raise ValueError(f"deployment names must be unique, got {names}")
        wnames = [w.name for w in self.workloads]
        if len(set(wnames)) != len(wnames):
            raise ValueError(f"workload names must be unique, got {wnames}")
        snames = [s.name for s in self.sites]
        if len(set(snames)) != len(snames):
            raise ValueError(f"site names must be unique, got {snames}")
        for i, d in enumerate(self.deployments):
            if d.site is not None and d.site not in snames:
                raise ValueError(f"deployments[{i}].site: {d.site!r} is not a site; sites: {snames}")
        if not self.workloads and self.forecast is None:
            raise ValueError("workloads: at least one [[workloads]] entry is needed (or a [forecast] block, whose tenants come from the market)")
        for i, s in enumerate(self.sites):
            cn = [c.name for c in s.contracts]
            if len(set(cn)) != len(cn):
                raise ValueError(f"sites[{i}].contracts: names must be unique within a site, got {cn}")
        sim_ = self.simulation
        if sim_.warmup_s >= sim_.horizon_s and self.forecast is None:
            fail("simulation.warmup_s", f"{sim_.warmup_s:g} s leaves nothing of the {sim_.horizon_s:g} s horizon to measure",
                 "0 <= warmup_s < horizon_s")
        gpn = self.faults.gpus_per_node
        for i, d in enumerate(self.deployments):
            if d.tp > gpn:
                fail(f"deployments[{i}].tp", f"{d.tp} GPUs per replica exceed the {gpn} GPUs of a node (faults.gpus_per_node)",
                     f"tp <= {gpn}")
        cp = self.capacity_policy
        if cp.low_utilisation >= cp.high_utilisation:
            fail("capacity_policy.low_utilisation", f"{cp.low_utilisation:g} is not below high_utilisation ({cp.high_utilisation:g})",
                 "low_utilisation < high_utilisation")
        if cp.min_gpus > cp.max_gpus:
            fail("capacity_policy.min_gpus", f"{cp.min_gpus} is above max_gpus ({cp.max_gpus})", "min_gpus <= max_gpus")
        if cp.kind != "fixed":
            dnames = [d.name for d in self.deployments]
            if cp.deployment is not None and cp.deployment not in dnames:
                raise ValueError(f"capacity_policy.deployment: {cp.deployment!r} is not a deployment; deployments: {dnames}")
            if cp.contract is not None:
                for i, s_ in enumerate(self.sites):
                    if s_.contracts and cp.contract not in [c.name for c in s_.contracts]:
                        raise ValueError(f"capacity_policy.contract: site {s_.name!r} has no contract named {cp.contract!r}; "
                                         f"it has {[c.name for c in s_.contracts]}")
            grow = [d for d in self.deployments if cp.deployment is None or d.name == cp.deployment]
            big = max(grow, key=lambda d: d.tp)
            if cp.step_gpus < big.tp:
                raise ValueError(f"capacity_policy.step_gpus: {cp.step_gpus} GPUs cannot hold one replica of "
                                 f"deployment {big.name!r} (tp={big.tp}); use {big.tp} or a multiple of it")
        served = {d.model for d in self.deployments}
        asked = {w.model for w in self.workloads}
        for i, w in enumerate(self.workloads):
            if w.model not in served:
                blame, hint = _misspelt_deployment(self.deployments, w.model, asked)
                if blame is not None:   # the deployment's model is the typo, not the workload's
                    d = self.deployments[blame]
                    raise ValueError(f"deployments[{blame}].model: {d.model!r} is no catalog model and no workload asks "
                                     f"for it; did you mean {w.model!r} (workloads[{i}].model)?")
                near = difflib.get_close_matches(w.model, sorted(served), n=1, cutoff=0.8)
                also = (f"; or is deployments[{hint}].model {self.deployments[hint].model!r} a typo of it?"
                        if hint is not None else f"; did you mean {near[0]!r}?" if near else "")
                raise ValueError(f"workloads[{i}].model: {w.model!r} is served by no deployment (served: {sorted(served)}){also}")
        return self


# ------------------------------------------------------------------ loading
_TYPE_WORDS = {
    "float_type": "a number (integer or decimal; strings and booleans are not converted)",
    "int_type": "an integer (strings, booleans and decimals are not converted)",
    "bool_type": "true or false",
    "string_type": "a string",
    "list_type": "a list",
    "dict_type": "a table",
    "model_type": "a table",
    "model_attributes_type": "a table",
}
_RANGE_TYPES = ("greater_than", "greater_than_equal", "less_than", "less_than_equal")


def _range_text(info) -> str:
    """The allowed range of a field from its constraints: '> 0 and <= 1024'."""
    parts = []
    for m in getattr(info, "metadata", ()) or ():
        for attr, sym in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<=")):
            v = getattr(m, attr, None)
            if v is not None:
                parts.append(f"{sym} {v:g}" if isinstance(v, float) else f"{sym} {v}")
    return " and ".join(parts)


def _got(inp) -> str:
    if isinstance(inp, bool):
        return f"{str(inp).lower()} (a boolean)"
    if isinstance(inp, str):
        return f"{inp!r} (a string)"
    if isinstance(inp, (dict, list)):
        return "a table" if isinstance(inp, dict) else "a list"
    return repr(inp)


def _walk_location(loc) -> tuple[str, Any]:
    """The user's field path of a validation location (union tags dropped) and the FieldInfo
    of its last field (None if unknown)."""
    import typing
    path, cur, info = "", Scenario, None
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
            continue
        if isinstance(cur, type) and issubclass(cur, BaseModel):
            if part in cur.model_fields:
                info = cur.model_fields[part]
                path += ("." if path else "") + part
                cur = _unwrap_keep_dict(info.annotation)
            continue  # a tag or validator name inside the model
        if isinstance(cur, tuple):
            member = _union_member(cur, part) or next(
                (m for m in cur if getattr(m, "__name__", None) == part), None)
            cur = member   # a union tag: not part of the user's path
            continue
        if typing.get_origin(cur) is dict:
            path += f".{part}"
            cur = _unwrap_keep_dict(typing.get_args(cur)[1])
            continue
        # a tag of a union of plain types (str | list[float]): drop it
    return path, info


def _unwrap_keep_dict(ann):
    import typing
    if typing.get_origin(ann) is dict:
        return ann
    if typing.get_origin(ann) is Annotated:
        return _unwrap_keep_dict(typing.get_args(ann)[0])
    return _unwrap(ann)


def _format_validation_error(err: ValidationError, source: str) -> str:
    errors = err.errors()
    # an unknown field explains the rest (a typo'd name is also "missing"): report it first;
    # then the deepest location (inside a union, the member that got furthest)
    errors.sort(key=lambda e: (e["type"] != "extra_forbidden", -len(e["loc"])))
    e = errors[0]
    loc, info = _walk_location(e["loc"])
    typ, ctx, inp = e["type"], e.get("ctx") or {}, e.get("input")
    msg = e["msg"]
    if typ == "extra_forbidden":
        loc = f"{loc}{'.' if loc else ''}{e['loc'][-1]}"
        msg = "unknown field"
        parent = _parent_model(Scenario, [p for p in e["loc"][:-1]])
        if parent is not None:
            msg += f"; allowed: {', '.join(sorted(parent.model_fields))}"
    elif typ == RULE:   # fail(): a path relative to the model that raised
        rel = ctx["field"]
        loc = f"{loc}{'' if rel.startswith('[') or not loc else '.'}{rel}"
        msg = f"{ctx['what']}; allowed: {ctx['allowed']}"
    elif typ in ("value_error", "assertion_error"):
        msg = msg.split(", ", 1)[1] if msg.startswith(("Value error, ", "Assertion failed, ")) else msg
        if not loc or msg.startswith(loc):
            head, sep, rest = msg.partition(": ")
            if sep and " " not in head:
                loc, msg = head, rest
    elif typ == "finite_number":
        rng = _range_text(info)
        msg = f"{inp!r} is not finite; allowed: a finite number" + (f" {rng}" if rng else "")
    elif typ in _TYPE_WORDS:
        rng = _range_text(info) if typ in ("float_type", "int_type") else ""
        msg = f"{_got(inp)} is not {_TYPE_WORDS[typ].split(' (')[0]}; allowed: {_TYPE_WORDS[typ]}" + (f", {rng}" if rng else "")
    elif typ in _RANGE_TYPES:
        sym = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}
        rng = _range_text(info) or " and ".join(f"{sym[k]} {v}" for k, v in ctx.items() if k in sym)
        msg = f"{inp!r} is out of range; allowed: {rng}"
    elif typ == "literal_error":
        msg = f"{_got(inp)} is not allowed; allowed: {ctx.get('expected', '')}"
    elif typ == "union_tag_invalid":
        msg = (f"{ctx.get('tag')!r} is not a known {ctx.get('discriminator', 'kind').strip(chr(39))}; "
               f"allowed: {ctx.get('expected_tags', '')}")
    elif typ == "union_tag_not_found":
        msg = f"needs a {ctx.get('discriminator', 'kind').strip(chr(39))} field; allowed: one of the documented kinds (sovsim schema)"
    elif typ == "missing":
        msg = "required field is missing; allowed: see `sovsim schema`"
    elif typ in ("too_short", "too_long"):
        msg = f"{'too few' if typ == 'too_short' else 'too many'} items; allowed: " + msg.split("should have ", 1)[-1].split(" after")[0]
    elif "input" in e and not isinstance(inp, (dict, list)):
        msg += f" (got {inp!r})"
    more = len(errors) - 1
    tail = f" (+{more} more error{'s' if more > 1 else ''})" if more else ""
    where = f"{source}: " if source else ""
    return f"{where}{loc or 'scenario'}: {msg}{tail}"


def _parent_model(model, path):
    """Walk the schema along a validation location to the model holding the last field."""
    cur = model
    dict_key = False    # the next part is a key of a dict-valued field, not a field name
    for part in path:
        if isinstance(part, int) or dict_key:
            dict_key = False
            continue
        if cur is None or not hasattr(cur, "model_fields"):
            return None
        if part in cur.model_fields:
            ann = cur.model_fields[part].annotation
            dict_key = _is_dict(ann)
            cur = _unwrap(ann)
        else:
            # discriminator tag of a union: pick the member with that literal
            cur = _union_member(cur, part) if cur is not None else None
    return cur


def _is_dict(ann) -> bool:
    origin = typing.get_origin(ann)
    if origin is Annotated:
        return _is_dict(typing.get_args(ann)[0])
    if origin is Union or origin is types.UnionType:
        return any(_is_dict(a) for a in typing.get_args(ann) if a is not type(None))
    return origin is dict


def _unwrap(ann):
    origin = typing.get_origin(ann)
    if origin is Annotated:
        return _unwrap(typing.get_args(ann)[0])
    if origin in (list, tuple):
        return _unwrap(typing.get_args(ann)[0])
    if origin is dict:
        return _unwrap(typing.get_args(ann)[1])
    if origin is Union or origin is types.UnionType:
        args = [a for a in typing.get_args(ann) if a is not type(None)]
        if len(args) == 1:
            return _unwrap(args[0])
        return tuple(_unwrap(a) for a in args)
    return ann


def _union_member(members, tag):
    if not isinstance(members, tuple):
        return None
    for m in members:
        for f in getattr(m, "model_fields", {}).values():
            if typing_literal_has(f.annotation, tag):
                return m
    return None


def typing_literal_has(ann, value) -> bool:
    import typing
    return typing.get_origin(ann) is Literal and value in typing.get_args(ann)


def scenario_from_dict(data: dict[str, Any], source: str = "") -> Scenario:
    try:
        return Scenario.model_validate(data)
    except ValidationError as err:
        raise ScenarioError(_format_validation_error(err, source)) from None


def packaged_scenarios() -> list[str]:
    """Names of the scenarios shipped in the package (``sovsim run NAME``)."""
    return sorted(p.name[:-5] for p in resources.files("sim.scenarios").iterdir()
                  if p.name.endswith(".toml"))


def load_scenario(path: str | Path | None = None) -> Scenario:
    """Load a TOML scenario: a file path, or the name of a packaged scenario
    (``default``: the 36-month forecast; ``day``: one day of Mixtral traffic); ``None``
    loads ``default``."""
    if path is None:
        path = "default"
    p = Path(path)
    if p.is_file():
        text = p.read_text()
        source = str(p)
    elif str(path) in packaged_scenarios():
        text = resources.files("sim.scenarios").joinpath(f"{path}.toml").read_text()
        source = f"{path}.toml"
    else:
        raise ScenarioError(f"{p}: no such scenario file (packaged scenarios: {', '.join(packaged_scenarios())})")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ScenarioError(f"{source}: not valid TOML: {err}") from None
    return scenario_from_dict(data, source)


def with_overrides(scenario: Scenario, overrides: dict[str, Any]) -> Scenario:
    """A copy of ``scenario`` with dotted-path fields replaced, re-validated.

    ``{"deployments.0.replicas": 8, "simulation.seed": 3}``."""
    data = scenario.model_dump(mode="python")
    for dotted, value in overrides.items():
        cur: Any = data
        parts = dotted.split(".")
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if isinstance(cur, list):
                try:
                    idx = int(part)
                    cur[idx]
                except (ValueError, IndexError):
                    raise ScenarioError(f"{dotted}: {part!r} is not an index of a list of {len(cur)}") from None
                if last:
                    cur[idx] = value
                else:
                    cur = cur[idx]
            elif isinstance(cur, dict):
                if part not in cur:
                    raise ScenarioError(f"{dotted}: unknown field {part!r}; allowed: {', '.join(sorted(cur))}")
                if last:
                    cur[part] = value
                else:
                    cur = cur[part]
            else:
                raise ScenarioError(f"{dotted}: {'.'.join(parts[:i])} is not a table")
    _follow_new_profile(scenario, data, overrides)
    return scenario_from_dict(data, "override")


def _follow_new_profile(scenario: Scenario, data: dict, overrides: dict[str, Any]) -> None:
    """``--set deployments.N.profile=P``: batching fields still at the old defaults (the old
    profile's, or the schema's) take P's defaults; fields set to other values, or overridden in
    the same call, are kept."""
    for dotted, value in overrides.items():
        parts = dotted.split(".")
        if len(parts) != 3 or parts[0] != "deployments" or parts[2] != "profile" or value not in ENGINE_PROFILES:
            continue
        i = int(parts[1])
        dep = scenario.deployments[i]
        if dep.profile is not None:
            old = ENGINE_PROFILES[dep.profile].batching(catalog.gpu(dep.gpu))
        else:
            old = {k: f.default for k, f in BatchingSpec.model_fields.items()}
        b = data["deployments"][i]["batching"]
        for k, v in old.items():
            if k in b and b[k] == v and f"deployments.{i}.batching.{k}" not in overrides:
                del b[k]


def resolved_config(scenario: Scenario, seed: int) -> dict:
    """The scenario as JSON-able data with the seed the run actually uses (``config.json``)."""
    data = scenario.model_dump(mode="json")
    data["simulation"]["seed"] = seed
    return data
