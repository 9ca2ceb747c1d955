"""The one run-folder writer: every command that writes results writes them through it.

A run folder (``runs/<scenario name>/`` by default, or ``--out``) holds:

* ``config.json``: the resolved scenario, written **first**, before any work, so a failed
  run still says what was asked;
* the results (``summary.json``, tables, figures, ``report.html``), each written to a
  temporary name and renamed into place, so a reader never sees half a file;
* ``manifest.json``, written **last**: ``status`` (``running`` while the run goes on, then
  ``complete``, ``failed`` or ``interrupted``), the command, and every file written with its
  size and SHA-256;
* ``error.txt`` (the traceback) when the run failed.

Before a run starts, the files a previous run left in the folder are removed (those its
manifest lists, and the result names every sovsim command writes), so a failed run never
sits beside the previous run's results. Files the user put there are left alone.

Names that come from a scenario (its ``name``) never escape the output root:
:func:`safe_name` keeps letters, digits, ``.``, ``-`` and ``_`` and refuses ``..``.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import traceback
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable

from sim.core.errors import UserError
from sim.core.serialise import json_default

MANIFEST = "manifest.json"
CONFIG = "config.json"
ERROR = "error.txt"
# every result name a sovsim command writes (cleaned from a folder that has no manifest yet)
RESULT_NAMES = (CONFIG, ERROR, MANIFEST, "summary.json", "timeseries.parquet", "requests.parquet",
                "monthly.parquet", "monthly.csv", "report.html", "overview.png", "forecast.png",
                "capacity.json", "capacity_evaluations.csv", "capacity.png", "cells.csv")
FILE_MODE = 0o644


def safe_name(name: str) -> str:
    """A folder name from a scenario name: letters, digits, ``.``, ``-``, ``_`` (others
    become ``_``); never empty, never starting with a dot."""
    out = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name).lstrip(".")
    return out or "scenario"


def default_out(name: str, root: str | Path = "runs") -> Path:
    """``root/<safe name>``: always inside ``root``."""
    return Path(root) / safe_name(name)


def check_out_dir(out: str | Path, flag: str = "--out") -> Path:
    """``out`` as a usable folder (created if missing), or a one-line :class:`UserError`."""
    p = Path(out)
    if p.exists() and not p.is_dir():
        raise UserError(f"{flag} {p}: is a file; give a folder (it is created if missing)")
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"{flag} {p}: cannot create the folder ({err.strerror or err})") from None
    if not os.access(p, os.W_OK | os.X_OK):
        raise UserError(f"{flag} {p}: the folder is not writable")
    return p


def write_atomic(path: Path, write: Callable[[Path], Any]) -> None:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it into place
    (mode 0644), so readers see the old file or the whole new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def write_json_atomic(path: Path, obj: Any, **kw) -> None:
    kw.setdefault("default", json_default)
    write_atomic(path, lambda t: t.write_text(json.dumps(obj, **kw) + "\n"))


def _sha256(p: Path) -> str:
    h = hashlib.sha256()
    with p.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class RunFolder:
    """One run's output folder (see the module docstring)."""

    def __init__(self, path: str | Path, command: str = "run", flag: str = "--out"):
        self.path = check_out_dir(path, flag)
        self.command = command
        self.files: list[str] = []
        self.status = "running"
        self._clean()
        self._manifest()

    # ------------------------------------------------------------------ writing
    def _clean(self) -> None:
        old = set(RESULT_NAMES)
        m = self.path / MANIFEST
        if m.is_file():
            try:
                old |= {f["name"] for f in json.loads(m.read_text()).get("files", [])}
            except (ValueError, KeyError, TypeError, AttributeError):
                pass
        for name in old:
            p = self.path / name
            if p.is_file() and p.resolve().parent == self.path.resolve():
                p.unlink()

    def _add(self, name: str) -> Path:
        if name not in self.files:
            self.files.append(name)
        return self.path / name

    def write_config(self, config: dict) -> None:
        write_json_atomic(self._add(CONFIG), config, indent=2)

    def write_json(self, name: str, obj: Any) -> None:
        write_json_atomic(self._add(name), obj, indent=2)

    def write_text(self, name: str, text: str) -> None:
        write_atomic(self._add(name), lambda t: t.write_text(text))

    def write_with(self, name: str, write: Callable[[Path], Any]) -> None:
        """``write(tmp_path)`` writes the file (a DataFrame's ``to_parquet``, a figure's
        ``savefig``...); it is renamed to ``name`` when complete."""
        write_atomic(self._add(name), write)

    def adopt(self, name: str) -> None:
        """Record a file that another function wrote into the folder itself (figures)."""
        p = self.path / name
        if p.is_file():
            os.chmod(p, FILE_MODE)
            self._add(name)

    def _manifest(self) -> None:
        files = [{"name": n, "bytes": (self.path / n).stat().st_size, "sha256": _sha256(self.path / n)}
                 for n in self.files if (self.path / n).is_file()]
        write_json_atomic(self.path / MANIFEST, {"status": self.status, "command": self.command,
                                                 "files": files}, indent=2)

    # ------------------------------------------------------------------ ending
    def complete(self) -> None:
        self.status = "complete"
        self._manifest()

    def fail(self, text: str, status: str = "failed") -> None:
        self.write_text(ERROR, text)
        self.status = status
        self._manifest()


def add_to_manifest(path: str | Path, names: list[str]) -> None:
    """Record files written (or rewritten) into a finished run folder after its manifest (a
    report made by the command from the run's results); entries already listed get their new
    size and checksum."""
    p = Path(path)
    m = p / MANIFEST
    try:
        man = json.loads(m.read_text())
    except (OSError, ValueError):
        return
    files = man.setdefault("files", [])
    index = {f["name"]: i for i, f in enumerate(files)}
    for n in names:
        f = p / n
        if f.is_file():
            os.chmod(f, FILE_MODE)
            entry = {"name": n, "bytes": f.stat().st_size, "sha256": _sha256(f)}
            if n in index:     # rewritten after the manifest (e.g. a summary gaining its warnings)
                files[index[n]] = entry
            else:
                index[n] = len(files)
                files.append(entry)
    write_json_atomic(m, man, indent=2)


@contextmanager
def run_folder(path: str | Path | None, command: str = "run", config: dict | None = None):
    """``with run_folder(out, config=cfg) as rf:`` — writes ``config.json`` first, then
    whatever the block writes; marks the folder complete, failed (``error.txt``) or
    interrupted. ``path=None`` yields ``None`` (nothing is written)."""
    if path is None:
        yield None
        return
    rf = RunFolder(path, command)
    if config is not None:
        rf.write_config(config)
        rf._manifest()
    try:
        yield rf
    except KeyboardInterrupt:
        rf.fail("interrupted (KeyboardInterrupt)\n", status="interrupted")
        raise
    except BaseException:
        rf.fail(traceback.format_exc())
        raise
    rf.complete()
