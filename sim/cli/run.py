"""``sovsim run`` and ``sovsim schema``."""
from __future__ import annotations

import json
import os
import sys
import typing

from sim.core.errors import UserError
from sim.forecast.forecast import format_forecast, run_forecast
from sim.scenario import Scenario, load_scenario, with_overrides
from sim.scenario.estimate import ENV as WORK_ENV
from sim.study.report import finish_forecast, write_run_report
from sim.cli.cells import run_cells_command
from sim.core.runfolder import add_to_manifest, check_out_dir, default_out
from sim.study.run import _json_default, run
from sim.study.sweep import make_executor

#: What ``sovsim run`` runs without a scenario: the packaged 36-month provider forecast
#: (about 1.5 minutes on 2 cores, docs/forecast.md); the 16-GPU forecast is ``small``.
RUN_DEFAULT = "provider"


def register(sub):
    p = sub.add_parser("run", help="simulate a scenario (default: the packaged provider forecast)",
                       description="Simulate a scenario and write config.json, summary.json, "
                                   "timeseries.parquet, requests.parquet and figures to --out.")
    p.add_argument("scenario", nargs="?", help=f"scenario TOML file or packaged name (default: {RUN_DEFAULT!r}, the "
                                               "36-month provider forecast; 'small' is the 16-GPU one)")
    p.add_argument("--seed", type=int, help="root seed (default: the scenario's simulation.seed)")
    p.add_argument("--out", help="output folder (default: runs/<scenario name>)")
    p.add_argument("--quiet", action="store_true", help="no progress bar, no table")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="override a scenario field by dotted path, e.g. deployments.0.replicas=8 "
                        "(VALUE is parsed as TOML, else taken as a string); repeatable")
    p.add_argument("--workers", type=int, default=None,
                   help="processes for a scenario with [cells] (default: all cores; 0 = in this process); "
                        "for a forecast, N >= 1 runs each month's windows on N processes (default: in this process)")
    add_max_work(p)
    p.set_defaults(func=cmd_run)

    s = sub.add_parser("schema", help="print the scenario reference: every field, its type, default and meaning")
    s.add_argument("--markdown", action="store_true", help="print as a Markdown table (docs/scenario-reference.md)")
    s.set_defaults(func=cmd_schema)


def _work_factor(text: str) -> float:
    import argparse
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number; allowed: a factor > 0 on the work limits, or inf") from None
    if not v > 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be > 0; allowed: a factor > 0 on the work limits, or inf")
    return v


def add_max_work(p) -> None:
    """``--max-work X``: multiply the work limits checked before a run (sim.scenario.estimate)."""
    p.add_argument("--max-work", type=_work_factor, default=None, metavar="X",
                   help="allow X times the default work limits (simulated requests, time-series bins, replicas, "
                        "policy checks, fault events; see sim/scenario/estimate.py); inf = no limit")


def apply_max_work(args) -> None:
    """Put ``--max-work`` in the environment, where every run of this command (also in sweep
    worker processes) reads it; the CLI's main restores the environment afterwards."""
    if getattr(args, "max_work", None) is not None:
        os.environ[WORK_ENV] = repr(args.max_work)


def parse_overrides(items: list[str]) -> dict:
    import tomllib
    out = {}
    for item in items:
        if "=" not in item:
            raise UserError(f"--set {item!r}: expected FIELD=VALUE, e.g. deployments.0.replicas=8")
        key, raw = item.split("=", 1)
        try:
            value = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw
        out[key.strip()] = value
    return out


def scenario_from_args(args):
    """The scenario a run command names (file or packaged name), with its --set overrides;
    checks --seed."""

    if args.seed is not None and args.seed < 0:
        raise UserError(f"--seed {args.seed}: must be a non-negative integer")
    apply_max_work(args)
    scenario = load_scenario(args.scenario)
    if args.set:
        scenario = with_overrides(scenario, parse_overrides(args.set))
    return scenario


def cmd_run(args) -> int:
    if args.scenario is None:
        args.scenario = RUN_DEFAULT

    scenario = scenario_from_args(args)
    if scenario.cells.max_replicas is not None and scenario.forecast is None:
        return run_cells_command(args, scenario)
    out = check_out_dir(args.out) if args.out else default_out(scenario.name)
    progress = False if args.quiet else None   # None: sim.core.progress default (bar on a terminal, heartbeat lines otherwise)
    if scenario.forecast is not None:
        # the forecast's own figure is replaced by the study's (labelled, SLA target line)
        ex, close = make_executor(args.workers) if args.workers else (None, lambda: None)
        try:
            result = run_forecast(scenario, seed=args.seed, out_dir=out, progress=progress, executor=ex, figures=False)
        finally:
            close()
        finish_forecast(result)   # warnings into summary.json, forecast.png, report.html
        if args.json:
            print(json.dumps(result.summary, default=_json_default))
        elif not args.quiet:
            print(format_forecast(result))
            print(format_warnings(result.summary["warnings"]))
            print(f"\nwrote {out}/: {', '.join(result.files)}   ({result.wall_s:.1f} s wall)")
        else:
            print_warnings_quiet(result.summary["warnings"])
        return 0
    result = run(scenario, seed=args.seed, out_dir=out, progress=progress)
    write_run_report(result)
    add_to_manifest(out, ["report.html"])
    result.files.append("report.html")
    if args.json:
        print(json.dumps(result.summary, default=_json_default))
    elif not args.quiet:
        print(format_summary(result.summary))
        print(format_warnings(result.summary.get("warnings", [])))
        print(f"\nwrote {out}/: {', '.join(result.files)}   ({result.wall_s:.1f} s wall)")
    else:
        print_warnings_quiet(result.summary.get("warnings", []))
    return 0


def format_warnings(warnings: list[str]) -> str:
    """The warnings block printed after a run's tables (empty line when there are none)."""
    if not warnings:
        return "\nno warnings"
    return "\n" + "\n".join([f"warnings ({len(warnings)}):"] + [f"  ! {w}" for w in warnings])


def print_warnings_quiet(warnings: list[str]) -> None:
    """Under --quiet the tables are left out, the warnings are not (one line each, on stderr)."""
    for w in warnings:
        print(f"sovsim: warning: {w}", file=sys.stderr)


def _fmt(v, unit="s"):
    if v is None:
        return "-"
    if unit == "s":
        return f"{v * 1000:.0f} ms" if v < 10 else f"{v:.1f} s"
    return f"{v:.3g}"


def format_summary(s: dict) -> str:
    lines = [f"scenario {s['scenario']}  seed {s['seed']}  horizon {s['horizon_s'] / 3600:.1f} h  "
             f"{s['gpus']} GPUs in {s['replicas']} replicas"
             + (" at the end" if s.get("replicas_ever", s["replicas"]) != s["replicas"] else "")]
    lines.append(f"requests: {s['arrivals']} arrived, {s['completed']} completed, "
                 f"{s['rejected']} rejected, {s['in_flight']} in flight at the horizon")
    ru = s.get("request_utilisation")
    tu = s.get("throughput_utilisation")
    # the load: request utilisation, throughput utilisation beside it (the busy share, time with
    # any request in flight, reads ~100 % at almost any load: it stays in summary.json as busy_share)
    lines.append("load: " + (f"request utilisation {ru * 100:.1f} %" if ru is not None else "request utilisation -")
                 + (f", throughput utilisation {tu * 100:.1f} %" if tu is not None else "") + "   "
                 f"output {s['throughput_output_tokens_per_s']:.0f} tokens/s   "
                 f"preemptions {s['preemptions']}")
    deps = s.get("deployments") or {}
    if len(deps) > 1:
        for name, d in deps.items():
            dru, dtu = d.get("request_utilisation"), d.get("throughput_utilisation")
            lines.append(f"  {name}{' at ' + d['site'] if d.get('site') else ''}: {d.get('gpus', 0)} GPUs, "
                         f"request utilisation {'-' if dru is None else f'{dru * 100:.1f} %'}, "
                         f"throughput utilisation {'-' if dtu is None else f'{dtu * 100:.1f} %'}")
    e = s.get("economics")
    if e:
        av = e.get("availability", {})
        share = e.get("margin_share")
        cpm = e.get("cost_eur_per_mtok")
        lines.append(f"revenue {e['revenue_eur']:,.2f} EUR   costs {e['costs_eur']:,.2f} EUR   "
                     f"gross margin {e['margin_eur']:,.2f} EUR"
                     + (f" ({share * 100:.1f} %)" if share is not None else "")
                     + (f"   cost {cpm:.3f} EUR per million tokens" if cpm is not None else "")
                     + f"   availability {av.get('replica_availability', 1.0) * 100:.2f} %")
        cap = e.get("capacity")
        if cap:
            for site, c in cap["sites"].items():
                lines.append(f"capacity ({cap['policy']}) at {'(unsited)' if site == '-' else site}: {c['gpus_start']} -> {c['gpus_end']} GPUs "
                             f"(peak {c['gpus_peak']}), {c['orders']} orders, {c['releases']} releases, "
                             f"{c['replicas_added']} replicas added, {c['replicas_retired']} drained and retired")
            lines.append(f"GPU-hours {s.get('gpu_hours', 0):,.1f}   throughput utilisation "
                         f"{(s.get('throughput_utilisation') or 0) * 100:.1f} %   requests migrated off leaving "
                         f"GPUs {cap['migrated_requests']}")
    lines.append("")
    hdr = f"{'workload':<16}{'done':>9}{'TTFT p50':>10}{'p99':>10}{'TPOT p50':>10}{'p99':>10}{'SLA met':>9}{'target':>8}"
    lines.append(hdr)
    for name, w in s["workloads"].items():
        att = w["sla_attainment"]
        lines.append(f"{name:<16}{w['completed']:>9}{_fmt(w['ttft_s']['p50']):>10}{_fmt(w['ttft_s']['p99']):>10}"
                     f"{_fmt(w['tpot_s']['p50']):>10}{_fmt(w['tpot_s']['p99']):>10}"
                     f"{('-' if att is None else f'{att * 100:.1f} %'):>9}{w['sla_target'] * 100:>7.0f}%")
    return "\n".join(lines)


# ---------------------------------------------------------------------- schema reference
def _type_name(ann) -> str:
    origin = typing.get_origin(ann)
    args = typing.get_args(ann)
    if origin is typing.Annotated:
        return _type_name(args[0])
    if origin is typing.Literal:
        return " | ".join(repr(a) for a in args)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return " | ".join(_type_name(a) for a in args)
    if origin in (list, tuple):
        return f"list[{_type_name(args[0])}]" if args else "list"
    if origin is dict:
        return f"dict[{_type_name(args[0])}, {_type_name(args[1])}]"
    if ann is type(None):
        return "none"
    return getattr(ann, "__name__", str(ann))


def _num(v) -> str:
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, int):
        if v >= 1 << 20 and v & (v - 1) == 0:
            return f"2^{v.bit_length() - 1}"
        return f"{v:,}" if abs(v) >= 10_000 else str(v)
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def constraint_text(metadata, noun: str = "items") -> str:
    """Readable constraints of a field's metadata: ``> 0 and <= 1024``, ``at least 1 character``
    (the strict, finite numbers every field has are left out: see the header)."""
    parts = []
    for m in metadata or ():
        if isinstance(getattr(m, "metadata", None), list):   # a Field(...) inside Annotated[...]
            inner = constraint_text(m.metadata, noun)
            if inner:
                parts.append(inner)
            continue
        for attr, sym in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<=")):
            v = getattr(m, attr, None)
            if v is not None:
                parts.append(f"{sym} {_num(v)}")
        lo, hi = getattr(m, "min_length", None), getattr(m, "max_length", None)
        if lo is not None:
            parts.append(f"at least {lo} {noun[:-1] if lo == 1 else noun}")
        if hi is not None:
            parts.append(f"at most {hi} {noun}")
        if getattr(m, "multiple_of", None) is not None:
            parts.append(f"a multiple of {_num(m.multiple_of)}")
        if getattr(m, "pattern", None):
            parts.append(f"matching {m.pattern}")
    return " and ".join(parts)


def _inner_constraints(ann) -> str:
    """Constraints inside an annotation (the values of a table, the items of a list)."""
    origin, args = typing.get_origin(ann), typing.get_args(ann)
    if origin is typing.Annotated:
        return constraint_text(args[1:]) or _inner_constraints(args[0])
    if origin is dict and len(args) == 2:
        c = _inner_constraints(args[1])
        return f"each value {c}" if c else ""
    if origin in (list, tuple) and args:
        c = _inner_constraints(args[0])
        return f"each item {c}" if c else ""
    return ""


def schema_rows():
    """(path, type, default, constraints, description) for every field, depth first: nested
    tables (also the values of a table of tables, ``<key>``) and every member of a union
    (tagged ``[kind=...]``)."""
    from pydantic import BaseModel
    from pydantic_core import PydanticUndefined

    rows = []
    seen = set()

    def members(ann):
        """(model, separator) of each schema model an annotation holds."""
        origin = typing.get_origin(ann)
        args = typing.get_args(ann)
        if origin is typing.Annotated:
            return members(args[0])
        if origin in (list, tuple):
            return [(m, "[]" + sep) for a in args for m, sep in members(a)]
        if origin is dict and len(args) == 2:
            return [(m, ".<name>" + sep) for m, sep in members(args[1])]
        if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
            out = []
            for a in args:
                out += members(a)
            return out
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            return [(ann, ".")]
        return []

    def walk(model, prefix):
        for name, f in model.model_fields.items():
            path = f"{prefix}{name}"
            default = "" if f.default is PydanticUndefined and f.default_factory is None else (
                "(table)" if f.default_factory is not None else repr(f.default))
            if f.is_required():
                default = "required"
            typ = _type_name(f.annotation)
            noun = "characters" if typ.startswith("str") else "items"
            cons = " and ".join(c for c in (constraint_text(f.metadata, noun), _inner_constraints(f.annotation)) if c)
            rows.append((path, typ, default, cons, f.description or ""))
            subs = members(f.annotation)
            for sm, sep in subs:
                key = (path, sm.__name__)
                if key in seen:
                    continue
                seen.add(key)
                tag = ""
                if len(subs) > 1:   # a union of tables: name the member by its tag
                    for fn, ff in sm.model_fields.items():
                        if typing.get_origin(ff.annotation) is typing.Literal and fn in ("kind", "dist"):
                            tag = f"[{fn}={typing.get_args(ff.annotation)[0]}]"
                if sep.startswith("[]"):
                    walk(sm, f"{path}[]{tag}{sep[2:]}")
                else:
                    walk(sm, f"{path}{sep[:-1]}{tag}{sep[-1]}")

    walk(Scenario, "")
    return rows


def cmd_schema(args) -> int:
    rows = schema_rows()
    if args.markdown:
        print("# Scenario reference\n")
        print("Generated by `sovsim schema --markdown`. Every field of a scenario TOML file; "
              "unknown fields are errors. Numbers are strict and finite everywhere (no inf or nan; "
              "no string or boolean is converted into a number; an integer is accepted where a "
              "decimal is expected); the constraints column gives each field's allowed range.\n")
        print("| field | type | default | constraints | meaning (source) |")
        print("| --- | --- | --- | --- | --- |")
        for r in rows:
            print("| " + " | ".join(str(c).replace("|", "\\|") for c in r) + " |")
        return 0
    print("# every scenario field: type, default, allowed values; numbers are strict and finite "
          "(no inf/nan, no string or boolean converted)")
    for path, typ, default, cons, desc in rows:
        print(f"{path}  ({typ}; default {default}{'; allowed ' + cons if cons else ''})")
        if desc:
            print(f"    {desc}")
    return 0
