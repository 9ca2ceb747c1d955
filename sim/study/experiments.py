"""The experiment scripts of a project checkout (``experiments/*.py``) and how to run each
(``sovsim figures``)."""
from __future__ import annotations

import dataclasses
import filecmp
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

from sim.core.errors import UserError


def project_root(start: Path | None = None) -> Path:
    """The folder holding experiments/: --root, else the current directory or the source tree."""
    for cand in ([start] if start else []) + [Path.cwd(), Path(__file__).resolve().parents[2]]:
        if cand is not None and (cand / "experiments").is_dir():
            return cand
    raise UserError("no experiments/ folder here; run from the project root or pass --root")


@dataclasses.dataclass(frozen=True)
class ExperimentPlan:
    name: str
    script: Path
    out: Path  # where the full run writes (its committed results)
    args: tuple[str, ...]  # full run, without --out
    quick_args: tuple[str, ...]  # smoke run, without --out
    out_file: str | None = None  # --out takes OUT/out_file, not OUT
    no_out: bool = False  # the script takes no --out: it always writes `out`

    def command(self, out: Path, quick: bool) -> list[str]:
        cmd = [sys.executable, str(self.script), *(self.quick_args if quick else self.args)]
        if not self.no_out:
            cmd += ["--out", str(out / self.out_file) if self.out_file else str(out)]
        return cmd


def discover_experiments(root: Path) -> list[ExperimentPlan]:
    """Every experiments/*.py that is a script (has a ``__main__`` block, name not starting with
    ``_``), with how to run it: experiments/figures.toml, else the _common.py convention."""
    cfg_path = root / "experiments" / "figures.toml"
    try:
        cfg = tomllib.loads(cfg_path.read_text()) if cfg_path.is_file() else {}
    except tomllib.TOMLDecodeError as err:
        raise UserError(f"{cfg_path}: not valid TOML: {err}") from None
    plans = []
    for p in sorted((root / "experiments").glob("*.py")):
        c = cfg.get(p.stem, {})
        if p.name.startswith("_") or c.get("skip") or "__main__" not in p.read_text():
            continue
        plans.append(ExperimentPlan(
            p.stem, p, root / c.get("out", f"results/{p.stem}"),
            tuple(c.get("args", [])), tuple(c.get("quick_args", ["--quick", "--workers", "0"])),
            c.get("out_file"), bool(c.get("no_out", False))))
    return plans


def _shadow_root(root: Path, tmp: Path) -> Path:
    """A stand-in project root under ``tmp`` for a script that takes no ``--out`` (it writes
    under its own root, ``Path(__file__).parent.parent``): a copy of ``experiments/``, links
    to ``sim/`` and ``models/``, an empty ``results/``."""
    shadow = tmp / "root"
    shutil.copytree(root / "experiments", shadow / "experiments",
                    ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("sim", "models"):
        if (root / name).exists():
            (shadow / name).symlink_to((root / name).resolve())
    (shadow / "results").mkdir()
    return shadow


def regenerate(plan: ExperimentPlan, root: Path, tmp: Path, env: dict | None = None):
    """Run ``plan``'s full command (the one that makes its committed results) so that it
    writes under ``tmp``, never into ``results/``.  Returns ``(process, fresh folder)``."""
    if plan.no_out:
        shadow = _shadow_root(root, tmp)
        moved = dataclasses.replace(plan, script=shadow / plan.script.relative_to(root))
        fresh = shadow / plan.out.relative_to(root)
        proc = subprocess.run(moved.command(fresh, False), cwd=shadow, env=env, capture_output=True, text=True)
        return proc, fresh
    fresh = tmp / plan.name
    fresh.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(plan.command(fresh, False), cwd=root, env=env, capture_output=True, text=True)
    return proc, fresh


def compare_with_committed(committed: Path, fresh: Path) -> tuple[list[str], list[str]]:
    """``(changed, new)``: files the fresh run wrote that differ from the committed ones
    (byte for byte), and files it wrote that are not committed.  Committed files the run does
    not write (another script's, in a shared folder) are not compared."""
    changed, new = [], []
    for p in sorted(fresh.rglob("*")):
        if not p.is_file():
            continue
        rel = p.relative_to(fresh)
        old = committed / rel
        if not old.is_file():
            new.append(str(rel))
        elif not filecmp.cmp(old, p, shallow=False):
            changed.append(str(rel))
    return changed, new

