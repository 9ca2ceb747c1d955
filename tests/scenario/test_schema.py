"""The scenario schema: every field is described, every default number carries a source,
an assumption or a run-setting label (nested models, dict values and the market's parameter
table included), every shipped scenario loads, unknown fields are refused by name, overrides
re-validate."""
from __future__ import annotations

import re
import types
import typing
from pathlib import Path

import pytest
from pydantic import BaseModel

from sim.cli.run import schema_rows
from sim.scenario import Scenario, ScenarioError, load_scenario, scenario_from_dict, with_overrides
from sim.scenario.market import MarketSpec, default_market_dict

REPO = Path(__file__).resolve().parents[2]
LABEL = re.compile(r"source|assumption|run setting", re.IGNORECASE)


def _models_in(ann) -> list[type[BaseModel]]:
    """Pydantic models an annotation can hold: through Annotated, Optional/Union, list, tuple,
    and dict values."""
    origin, args = typing.get_origin(ann), typing.get_args(ann)
    if origin is typing.Annotated:
        return _models_in(args[0])
    if origin is dict:
        return _models_in(args[1])
    if origin in (list, tuple, typing.Union, types.UnionType):
        return [m for a in args for m in _models_in(a)]
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return [ann]
    return []


def all_fields(root=Scenario, prefix=""):
    """(dotted path, model, field name, FieldInfo) for every field reachable from ``root``."""
    out, seen = [], set()

    def walk(model, pre):
        if model in seen:
            return
        seen.add(model)
        for name, f in model.model_fields.items():
            out.append((f"{pre}{model.__name__}.{name}", model, name, f))
            for sub in _models_in(f.annotation):
                walk(sub, pre)

    walk(root, prefix)
    return out


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def test_walker_reaches_nested_models():
    names = {m.__name__ for _, m, _, _ in all_fields()}
    # dict values (the competitor gap curves), list items, union members, optional sections
    assert {"GapCurveSpec", "CompetitorSpec", "MarketSpec", "SLACreditTier", "BurstSpec",
            "LogNormalLength", "TraceArrivals", "CapacityPolicySpec"} <= names
    assert len(all_fields()) > 150


def test_every_field_has_a_description():
    missing = [p for p, _, _, f in all_fields() if not (f.description or "").strip()]
    assert not missing, "fields without a description: " + ", ".join(missing)


def test_every_numeric_default_of_every_model_is_labelled():
    missing = []
    for path, _, _, f in all_fields():
        if f.is_required() or f.default_factory is not None or not _is_number(f.default):
            continue
        if not LABEL.search(f.description or ""):
            missing.append(f"{path} = {f.default!r}")
    assert not missing, "numeric defaults without a source, assumption or run-setting label: " + ", ".join(missing)


def _field_at(model, keys):
    """The FieldInfo a path of keys into a model dump ends on (list indices and dict keys skipped)."""
    f = None
    for k in keys:
        if isinstance(k, int) or model is None or k not in model.model_fields:
            continue
        f = model.model_fields[k]
        subs = _models_in(f.annotation)
        model = subs[0] if len(subs) == 1 else None
    return f


def test_every_number_of_the_default_market_table_is_labelled():
    """The market's defaults come from models/market/parameters.csv, not from pydantic
    defaults: each number the table supplies (gap curves too) names its source."""
    missing, seen = [], 0

    def leaves(obj, keys):
        if isinstance(obj, dict):
            for k, v in obj.items():
                yield from leaves(v, keys + [k])
        elif isinstance(obj, list):
            for i, v in enumerate(obj):
                yield from leaves(v, keys + [i])
        elif _is_number(obj):
            yield keys

    for keys in leaves(default_market_dict(), []):
        seen += 1
        f = _field_at(MarketSpec, keys)
        assert f is not None, keys
        if not LABEL.search(f.description or ""):
            missing.append(".".join(map(str, keys)))
    assert seen > 50
    assert not missing, "market table numbers without a source or assumption: " + ", ".join(missing)


def test_every_numeric_default_has_a_source_or_assumption():
    missing = []
    for path, typ, default, cons, desc in schema_rows():
        if default in ("required", "(table)", "None", "''", "[]", "{}") or default.startswith("'"):
            continue
        if not any(k in desc for k in ("Source", "assumption", "Run setting", "Label")):
            missing.append(f"{path} = {default}")
    assert not missing, "defaults without a source: " + ", ".join(missing)


@pytest.mark.parametrize("path", sorted(str(p.relative_to(REPO)) for p in (REPO / "sim" / "scenarios").glob("*.toml"))
                         + sorted(str(p.relative_to(REPO)) for p in (REPO / "experiments" / "scenarios").glob("*.toml")))
def test_every_shipped_scenario_loads(path):
    sc = load_scenario(REPO / path)
    assert isinstance(sc, Scenario) and sc.name
    assert sc.deployments


def test_shipped_scenarios_are_found():
    assert len(list((REPO / "experiments" / "scenarios").glob("*.toml"))) >= 4
    assert {p.stem for p in (REPO / "sim" / "scenarios").glob("*.toml")} >= {"default", "day"}


def _with(d: dict, path: list, key: str) -> dict:
    cur = d
    for k in path:
        cur = cur[k]
    cur[key] = 1
    return d


@pytest.mark.parametrize("path", [
    [], ["simulation"], ["router"], ["deployments", 0], ["deployments", 0, "batching"],
    ["deployments", 0, "step_time"], ["sites", 0], ["forecast"],
    ["market", "sovereign"], ["market", "competitors", 0], ["market", "competitors", 0, "sovereignty", "finance"],
    ["market", "verticals", 0, "sla"],
])
def test_unknown_field_is_refused_by_name_in_one_line(path):
    d = load_scenario().model_dump()
    _with(d, path, "bogus_field_x")
    with pytest.raises(ScenarioError) as ei:
        scenario_from_dict(d)
    msg = str(ei.value)
    assert "\n" not in msg
    assert "bogus_field_x" in msg and "unknown field" in msg
    assert "allowed:" in msg


def test_unknown_field_in_a_workload_names_the_field():
    d = load_scenario("day").model_dump()
    d["workloads"][0]["arrivals"]["rate_per_sec"] = 2.0
    with pytest.raises(ScenarioError) as ei:
        scenario_from_dict(d)
    msg = str(ei.value)
    assert "\n" not in msg and "workloads[0]" in msg and "rate_per_sec" in msg and "unknown field" in msg


def test_packaged_scenarios_load():
    sc = load_scenario()
    assert sc.deployments and sc.forecast is not None and sc.forecast.months == 36
    assert sc.market is not None and not sc.workloads  # tenants come from the market
    day = load_scenario("day")
    assert day.workloads and day.forecast is None
    with pytest.raises(ScenarioError, match="packaged scenarios: day, default"):
        load_scenario("nope")


def test_overrides_revalidate():
    sc = load_scenario()
    sc2 = with_overrides(sc, {"deployments.0.replicas": 7})
    assert sc2.deployments[0].replicas == 7
    with pytest.raises(ScenarioError, match="deployments\\[0\\].replicas"):
        with_overrides(sc, {"deployments.0.replicas": -2})
    with pytest.raises(ScenarioError, match="unknown field"):
        with_overrides(sc, {"deployments.0.nope": 1})


def test_unknown_site_reference_is_an_error():
    d = load_scenario().model_dump()
    d["deployments"][0]["site"] = "atlantis"
    with pytest.raises(ScenarioError, match="atlantis"):
        scenario_from_dict(d)


def _labels(dep_model: str, wl_model: str, step: dict | None = None) -> dict:
    dep = {"name": "d", "model": dep_model, "tp": 2}
    if step is not False:
        dep["step_time"] = step or {"kind": "constant", "decode_step_s": 0.02, "kv_cache_tokens": 20000}
    return {"deployments": [dep],
            "workloads": [{"name": "w", "model": wl_model, "arrivals": {"kind": "poisson", "rate_per_s": 1.0},
                           "prompt_tokens": {"dist": "constant", "value": 10},
                           "output_tokens": {"dist": "constant", "value": 10}}]}


def test_a_misspelt_deployment_model_is_blamed_on_the_deployment():
    # a constant step time keeps the model id a label, so the catalog does not catch the typo
    with pytest.raises(ScenarioError) as e:
        scenario_from_dict(_labels("mixtral-8x7", "mixtral-8x7b"), "s.toml")
    assert str(e.value) == ("s.toml: deployments[0].model: 'mixtral-8x7' is no catalog model and no workload asks "
                            "for it; did you mean 'mixtral-8x7b' (workloads[0].model)?")
    # a misspelt workload model is still the workload's, with the near miss named
    with pytest.raises(ScenarioError, match=r"workloads\[0\]\.model: 'mixtral-8x7' is served by no deployment "
                                            r"\(served: \['mixtral-8x7b'\]\); did you mean 'mixtral-8x7b'\?"):
        scenario_from_dict(_labels("mixtral-8x7b", "mixtral-8x7"), "s.toml")
    # two catalog models that differ: the workload's message, unchanged
    with pytest.raises(ScenarioError, match=r"workloads\[0\]\.model: 'mixtral-8x7b' is served by no deployment "
                                            r"\(served: \['llama-3-8b'\]\)$"):
        scenario_from_dict(_labels("llama-3-8b", "mixtral-8x7b", False), "s.toml")
    # a calibrated deployment with a misspelt id is caught by the catalog, on the deployment
    with pytest.raises(ScenarioError, match=r"deployments\[0\]\.model: unknown model 'mixtral-8x7'"):
        scenario_from_dict(_labels("mixtral-8x7", "mixtral-8x7b", False), "s.toml")
