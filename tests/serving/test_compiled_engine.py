"""The compiled engine (``pip install .`` compiles the serving hot path, ``setup.py``'s
``COMPILED`` modules, with mypyc) gives the same results as the pure-Python one, bit for bit.

The test process imports the checkout (pure Python).  A child process in isolated mode
(``python -I``: no checkout on ``sys.path``) imports the *installed* package.  Both run the
same scenarios (event skipping and per-iteration, sliding window with preemption, full-output
reservation, replica failures with requeue) and compare a digest of every per-request record
and of the summary.  The test skips, saying why, when there is no installed package outside the checkout
(an editable install), when it is not built from this checkout's sources of those modules,
or when it is pure Python by choice (``SOVSIM_PURE_PYTHON=1``) or for want of a C compiler.
It fails when a compiler is here and the installed package is still pure Python: the build
fell back (a type error mypy reports, say), which would otherwise go unnoticed.  CI installs with ``pip install ".[test]"``, so
there it runs.
"""
from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _scenario(mode="event_skipping", window=None, kv_tokens=8000, admission="greedy",
              faults=False, policy="least_outstanding"):
    d = {
        "name": "compiled-check",
        "simulation": {"horizon_s": 240.0, "request_sample_size": 100000, "engine_mode": mode},
        "router": {"policy": policy},
        "deployments": [{
            "name": "d", "model": "m", "replicas": 3,
            "batching": {"max_num_seqs": 24, "max_batched_tokens": 512, "block_size_tokens": 16,
                         "chunked_prefill": True, "kv_admission": admission},
            "step_time": {"kind": "constant", "decode_step_s": 0.02, "prefill_per_token_s": 5e-5,
                          "per_kv_token_s": 2e-7, "kv_cache_tokens": kv_tokens, "window_tokens": window},
        }],
        "workloads": [{
            "name": "w", "model": "m",
            "arrivals": {"kind": "poisson", "rate_per_s": 9.0},
            "prompt_tokens": {"dist": "lognormal", "mu": 5.5, "sigma": 0.9, "max": 3000},
            "output_tokens": {"dist": "geometric", "mean": 80},
        }],
    }
    if faults:
        d["faults"] = {"enabled": True, "gpu_failures_per_gpu_day": 300.0,
                       "node_failures_per_node_day": 0.0, "repair_median_s": 30.0,
                       "site_outages_per_year": 0.0, "requeue": "preserve"}
    return d


CASES = [
    (_scenario(), 1),
    (_scenario(mode="per_iteration"), 2),
    (_scenario(window=600, kv_tokens=3000), 3),            # window crossings, preemption
    (_scenario(admission="reserve_full_output", kv_tokens=20000), 4),
    (_scenario(faults=True, policy="central_queue"), 5),
]

# defined in both processes; the child also runs main(): the engine module's file, then one
# digest per case
_PROGRAM = r"""
import hashlib, json, sys
import sim.serving.engine as engine
from sim.scenario import scenario_from_dict
from sim.study.run import run

def digest(d, seed):
    res = run(scenario_from_dict(d), seed=seed)
    df = res.requests.sort_values("request_id")
    h = hashlib.sha256(df.to_csv(index=False).encode())
    h.update(json.dumps(res.summary, sort_keys=True, default=repr).encode())
    return h.hexdigest(), str(len(df))

def main():
    print(engine.__file__)
    for d, seed in json.loads(sys.stdin.read()):
        print(*digest(d, seed))
"""


def _compiled_modules() -> list[str]:
    """``setup.py``'s ``COMPILED`` list (the modules mypyc compiles)."""
    tree = ast.parse((ROOT / "setup.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "COMPILED" for t in node.targets):
            return list(ast.literal_eval(node.value))
    raise AssertionError("setup.py defines no COMPILED list")


def _c_compiler() -> bool:
    """Whether the C compiler Python's extensions are built with is on this machine."""
    cc = (sysconfig.get_config_var("CC") or "cc").split()[0]
    return shutil.which(os.environ.get("CC", cc).split()[0]) is not None


def _installed_engine() -> Path | None:
    """The installed package's engine directory when it is not this checkout."""
    code = "import sim.serving.engine as e, sys; print(e.__file__)"
    out = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True)
    if out.returncode != 0:
        return None
    p = Path(out.stdout.strip())
    return None if (ROOT / "sim") in p.parents else p


def test_compiled_engine_matches_pure_python():
    import sim.serving.engine as here
    assert not here.__file__.endswith(".so"), "the checkout itself must stay pure Python"
    installed = _installed_engine()
    if installed is None:
        pytest.skip("no installed sovsim outside the checkout (editable install)")
    site = installed.parents[2]   # .../site-packages/sim/serving/engine*
    for rel in _compiled_modules():
        shipped = site / rel
        if not shipped.exists() or shipped.read_bytes() != (ROOT / rel).read_bytes():
            pytest.skip(f"the installed sovsim was not built from this checkout's {rel}")
    if installed.suffix != ".so":
        if os.environ.get("SOVSIM_PURE_PYTHON", "") not in ("", "0") or not _c_compiler():
            pytest.skip(f"the installed engine is pure Python ({installed.name}) by choice or for want "
                        "of a C compiler: nothing compiled to check")
        pytest.fail("the installed sovsim is pure Python although a C compiler is here: the mypyc build "
                    "of setup.py's COMPILED modules failed (`pip install -v .` shows why; "
                    "`mypy --check-untyped-defs` on them must pass)")
    child = subprocess.run([sys.executable, "-I", "-c", _PROGRAM + "\nmain()\n"],
                           input=json.dumps(CASES), capture_output=True, text=True)
    assert child.returncode == 0, child.stderr[-3000:]
    lines = child.stdout.strip().splitlines()
    assert lines[0].endswith(".so"), lines[0]
    compiled = [tuple(line.split()) for line in lines[1:]]
    ns: dict = {}
    exec(compile(_PROGRAM, "<program>", "exec"), ns)   # the same code on the checkout
    pure = [ns["digest"](d, seed) for d, seed in CASES]
    assert all(int(n) > 100 for _, n in pure)   # every case served real traffic
    assert compiled == pure
