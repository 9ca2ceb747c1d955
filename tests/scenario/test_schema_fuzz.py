"""Property: a scenario generated from the schema itself is either refused in one line (a
:class:`UserError`, what the CLI prints with exit code 2) or runs to completion with requests
conserved, the ledger's identity to the cent and no residency violation.

The generator walks the pydantic models of :mod:`sim.scenario` from two small valid
scenarios (a constant-step fleet with contracts, faults, pricing and residency; a calibrated
Mixtral deployment) and replaces one to three fields, anywhere in the tree (defaults
included), by values drawn for the field's type: finite, infinite, NaN, negative, huge,
strings, booleans, wrong types, other literal tags.  Runs stay tiny: they are checked against
the work limits scaled by ``MAX_WORK`` (at most 10,000 requests and 2 replicas), so a valid
but large draw is refused by the work estimate, in one line too.
"""
from __future__ import annotations

import copy
import math
import typing
from types import UnionType

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from sim.core.errors import UserError
from sim.scenario import Scenario, scenario_from_dict
from sim.study.run import run

MAX_WORK = 2e-4   # x the default limits: 10,000 requests, 200 bins, 2 replicas, 200 policy checks

CONSTANT = {
    "name": "fuzz-constant",
    "simulation": {"horizon_s": 60.0, "timeseries_interval_s": 30.0},
    "sites": [
        {"name": "par-1", "jurisdiction": "FR", "certifications": ["SecNumCloud"], "network_latency_s": {"eu": 0.01},
         "contracts": [{"kind": "owned_colo", "name": "own", "gpus": 1}]},
        {"name": "fra-1", "jurisdiction": "DE", "network_latency_s": {"eu": 0.02},
         "contracts": [{"kind": "rental", "name": "rent", "term": "committed", "gpus": 1}]},
    ],
    "deployments": [
        {"name": "a", "site": "par-1", "model": "m", "replicas": 1,
         "batching": {"max_num_seqs": 16, "max_batched_tokens": 1024},
         "step_time": {"kind": "constant", "decode_step_s": 0.02, "prefill_per_token_s": 1e-5, "kv_cache_tokens": 20000}},
        {"name": "b", "site": "fra-1", "model": "m", "replicas": 1,
         "step_time": {"kind": "constant", "decode_step_s": 0.03, "kv_cache_tokens": 20000}},
    ],
    "workloads": [
        {"name": "p", "model": "m", "vertical": "finance", "arrivals": {"kind": "poisson", "rate_per_s": 2.0},
         "prompt_tokens": {"dist": "uniform", "low": 10, "high": 200}, "output_tokens": {"dist": "geometric", "mean": 20},
         "residency": {"allowed_jurisdictions": ["FR"]}},
        {"name": "n", "model": "m", "arrivals": {"kind": "nhpp", "rate_per_s": 1.0,
                                                 "burst": {"multiplier": 3.0, "mean_burst_s": 10.0, "mean_gap_s": 30.0}},
         "prompt_tokens": {"dist": "lognormal", "mu": 4.0, "sigma": 0.5}, "output_tokens": {"dist": "constant", "value": 8}},
        {"name": "c", "model": "m", "arrivals": {"kind": "closed_loop", "users": 2, "think_time_s": 1.0},
         "prompt_tokens": {"dist": "empirical", "values": [20, 80]}, "output_tokens": {"dist": "constant", "value": 8}},
    ],
    "pricing": [{"vertical": "finance", "input_eur_per_mtok": 1.0, "output_eur_per_mtok": 3.0}],
    "faults": {"enabled": False, "gpu_failures_per_gpu_day": 50.0, "repair_median_s": 20.0},
    "capacity_policy": {"kind": "fixed"},
}

CALIBRATED = {
    "name": "fuzz-calibrated",
    "simulation": {"horizon_s": 30.0},
    "sites": [{"name": "par-1", "jurisdiction": "FR", "contracts": [{"kind": "partner_reserved", "name": "p", "gpus": 2}]}],
    "deployments": [{"name": "mix", "site": "par-1", "model": "mixtral-8x7b", "tp": 2, "replicas": 1}],
    "workloads": [{"name": "w", "model": "mixtral-8x7b", "arrivals": {"kind": "poisson", "rate_per_s": 1.0},
                   "prompt_tokens": {"dist": "constant", "value": 200}, "output_tokens": {"dist": "geometric", "mean": 30}}],
}

SPECIAL_FLOATS = [math.inf, -math.inf, math.nan, 0.0, -1.0, 1e-9, 1e12, 1e308, -1e308]
WRONG = [None, "x", "4", True, False, [], {}, [1.0], {"a": 1}]


# ------------------------------------------------------------------ walking the schema
def _unwrap(ann):
    """(base annotation, nullable) with Annotated and Optional removed."""
    nullable = False
    while True:
        origin = typing.get_origin(ann)
        if origin is typing.Annotated:
            ann = typing.get_args(ann)[0]
        elif origin in (typing.Union, UnionType):
            args = [a for a in typing.get_args(ann) if a is not type(None)]
            nullable = nullable or len(args) < len(typing.get_args(ann))
            if len(args) == 1:
                ann = args[0]
            else:
                return ann, nullable
        else:
            return ann, nullable


def _models_in(ann) -> list[type[BaseModel]]:
    ann, _ = _unwrap(ann)
    origin = typing.get_origin(ann)
    if origin in (list, tuple):
        return _models_in(typing.get_args(ann)[0])
    if origin in (typing.Union, UnionType):
        return [m for a in typing.get_args(ann) for m in _models_in(a)]
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return [ann]
    return []


def _member_for(models, value: dict):
    """The model of a (possibly discriminated) union that a dict value belongs to."""
    for m in models:
        for tag in ("kind", "dist"):
            f = m.model_fields.get(tag)
            if f is not None and typing.get_origin(f.annotation) is typing.Literal:
                if value.get(tag) in typing.get_args(f.annotation):
                    return m
    return models[0] if len(models) == 1 else None


def leaves(model, data: dict, prefix=()):
    """(path, annotation) of every field reachable from ``data`` (absent blocks included)."""
    for name, f in model.model_fields.items():
        path = (*prefix, name)
        val = data.get(name)
        models = _models_in(f.annotation)
        if models and isinstance(val, dict):
            sub = _member_for(models, val)
            if sub is not None:
                yield from leaves(sub, val, path)
                yield path, f.annotation
                continue
        if models and isinstance(val, list) and val and all(isinstance(v, dict) for v in val):
            for i, v in enumerate(val):
                sub = _member_for(models, v)
                if sub is not None:
                    yield from leaves(sub, v, (*path, i))
            yield path, f.annotation
            continue
        if models and val is None and len(models) == 1 and f.default_factory is not None:
            yield from leaves(models[0], {}, path)   # a block left at its defaults
        yield path, f.annotation


def values_for(ann):
    base, nullable = _unwrap(ann)
    origin = typing.get_origin(base)
    wrong = st.sampled_from(WRONG)
    if base is bool:
        s = st.one_of(st.booleans(), st.sampled_from(["yes", 1, 0, 1.0]))
    elif base is int:
        s = st.one_of(st.integers(-3, 300), st.sampled_from([2 ** 63, 10 ** 9, 1 << 41, -(10 ** 9)]),
                      st.sampled_from(SPECIAL_FLOATS), st.floats(0, 100))
    elif base is float:
        s = st.one_of(st.floats(-10, 10), st.floats(0, 1e4), st.integers(-3, 1000), st.sampled_from(SPECIAL_FLOATS))
    elif origin is typing.Literal:
        s = st.one_of(st.sampled_from(typing.get_args(base)), st.text(max_size=4))
    elif base is str:
        s = st.one_of(st.sampled_from(["", "FR", "fr", "ZZ", "m", "mixtral-8x7b", "par-1", "a", "azure-conv", "*"]),
                      st.text(max_size=6))
    elif origin is list:
        inner = typing.get_args(base)[0] if typing.get_args(base) else float
        s = st.lists(values_for(inner), max_size=3)
    elif origin is dict:
        s = st.dictionaries(st.sampled_from(["eu", "us", "finance"]), values_for(typing.get_args(base)[1]), max_size=2)
    else:
        s = wrong
    return st.one_of(s, wrong, st.none()) if nullable else st.one_of(s, wrong)


def _set(data: dict, path, value):
    cur = data
    for part in path[:-1]:
        if isinstance(cur, list):
            cur = cur[part]
        else:
            nxt = cur.get(part)
            if not isinstance(nxt, (dict, list)):
                nxt = cur[part] = {}
            cur = nxt
    if isinstance(cur, list):
        cur[path[-1]] = value
    else:
        cur[path[-1]] = value


@st.composite
def scenarios(draw):
    data = copy.deepcopy(draw(st.sampled_from([CONSTANT, CALIBRATED])))
    fields = list(leaves(Scenario, data))
    for _ in range(draw(st.integers(1, 3))):
        path, ann = draw(st.sampled_from(fields))
        value = draw(values_for(ann))
        try:
            _set(data, path, value)
        except (TypeError, IndexError, KeyError, AttributeError):
            pass   # an earlier mutation replaced a block on this path by another type
    return data


# ------------------------------------------------------------------ the property
def _check_completed(summary: dict):
    assert summary["arrivals"] == summary["completed"] + summary["rejected"] + summary["in_flight"]
    assert summary["residency_violations"] == 0
    e = summary["economics"]
    assert e["revenue_cents"] - e["costs_cents"] == e["margin_cents"]
    lines_rev = sum(e[f"{ln}_cents"] for ln in ("revenue_input", "revenue_output"))
    assert lines_rev == e["revenue_cents"]
    for breakdown in ("by_month", "by_site", "by_vertical"):
        parts = e[breakdown].values()
        assert sum(p["revenue_cents"] for p in parts) == e["revenue_cents"]
        assert sum(p["costs_cents"] for p in parts) == e["costs_cents"]
        assert sum(p["margin_cents"] for p in parts) == e["margin_cents"]


@settings(max_examples=200, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(scenarios())
def test_generated_scenarios_are_refused_in_one_line_or_run_clean(data):
    try:
        sc = scenario_from_dict(data, "fuzz.toml")
        result = run(sc, max_work=MAX_WORK, figures=False)
    except UserError as err:     # the CLI prints exactly this line and exits with code 2
        msg = str(err)
        assert msg and "\n" not in msg and "Traceback" not in msg, msg
        return
    _check_completed(result.summary)


def test_the_generator_reaches_every_block():
    paths = {".".join(str(p) for p in path) for path, _ in leaves(Scenario, CONSTANT)}
    for expected in ("simulation.horizon_s", "sites.0.contracts.0.pue", "sites.1.contracts.0.committed_discount",
                     "deployments.0.step_time.decode_step_s", "deployments.0.batching.block_size_tokens",
                     "workloads.1.arrivals.burst.mean_burst_s", "workloads.0.residency.allowed_jurisdictions",
                     "pricing.0.input_eur_per_mtok", "faults.repair_median_s", "capacity_policy.min_gpus",
                     "router.max_wait_s", "workloads.0.sla.ttft_s"):
        assert expected in paths, expected
    # both bases are valid and run clean
    for base in (CONSTANT, CALIBRATED):
        _check_completed(run(scenario_from_dict(copy.deepcopy(base)), max_work=MAX_WORK, figures=False).summary)
