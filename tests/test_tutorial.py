"""Every code block of docs/tutorial.md runs: ``bash`` blocks line by line as shell commands
(with this environment's ``sovsim`` first on the PATH), ``toml`` blocks written to the file
their first line names (``# file: NAME``), ``python`` blocks executed in one namespace, all in
one temporary folder and in order.  ``text`` blocks are output and are not run.

Small, fast variants: an HTML comment before a block (invisible when the page is rendered)
changes it for the test only: ``<!-- ci: replace OLD => NEW -->`` replaces text in the block,
``<!-- ci: append ARGS -->`` appends arguments to every ``sovsim`` command in it."""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TUTORIAL = ROOT / "docs" / "tutorial.md"
FENCE = re.compile(r"^```(\w+)[^\n]*\n(.*?)^```", re.S | re.M)
CI = re.compile(r"<!-- ci: (replace|append) (.*?) -->")


def blocks(text: str) -> list[tuple[str, str]]:
    """(language, code) of every fenced block, with the ci: changes of the comments between the
    previous block and it applied."""
    out, last = [], 0
    for m in FENCE.finditer(text):
        lang, code = m.group(1), m.group(2)
        changes = CI.findall(text[last:m.start()])
        assert not changes or lang in ("bash", "python", "toml"), f"ci: comment before a {lang} block: {changes}"
        for kind, arg in changes:
            if kind == "replace":
                old, new = (x.strip() for x in arg.split("=>"))
                assert old in code, f"ci: replace {old!r}: not in the next block"
                code = code.replace(old, new)
            else:
                code = "\n".join(f"{line} {arg}" if line.startswith("sovsim ") else line for line in code.splitlines()) + "\n"
        out.append((lang, code))
        last = m.end()
    return out


def test_the_parser_sees_every_block():
    got = blocks(TUTORIAL.read_text())
    langs = [lang for lang, _ in got]
    assert langs.count("bash") >= 4 and "toml" in langs and "python" in langs
    assert any("sovsim capacity" in code for lang, code in got if lang == "bash")


def test_every_tutorial_block_runs(tmp_path):
    env = dict(os.environ, PATH=str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""),
               MPLBACKEND="Agg")
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    namespace: dict = {}
    ran = 0
    for lang, code in blocks(TUTORIAL.read_text()):
        if lang == "bash":
            for line in code.splitlines():
                if not line.strip() or line.startswith("#"):
                    continue
                assert line.startswith("sovsim "), f"a tutorial command that is not sovsim: {line}"
                r = subprocess.run(shlex.split(line), cwd=tmp_path, env=env, capture_output=True, text=True,
                                   timeout=300)
                assert r.returncode == 0, f"{line}\n{r.stderr[-2000:]}"
                ran += 1
        elif lang == "toml":
            first = code.splitlines()[0]
            m = re.match(r"# file: (\S+)", first)
            assert m, f"a toml block must name its file on its first line: {first}"
            (tmp_path / m.group(1)).write_text(code)
        elif lang == "python":
            cwd = os.getcwd()
            os.chdir(tmp_path)
            try:
                exec(compile(code, str(TUTORIAL), "exec"), namespace)
            finally:
                os.chdir(cwd)
            ran += 1
    assert ran >= 6
    assert (tmp_path / "runs" / "my" / "report.html").exists()
    assert (tmp_path / "sweeps" / "my-capacity" / "capacity.json").exists()


@pytest.mark.parametrize("doc", ["README.md"])
def test_readme_links_tutorial_guides_and_reference(doc):
    text = (ROOT / doc).read_text()
    for target in ("docs/tutorial.md", "docs/api.md", "docs/scenario-reference.md", "docs/metrics.md"):
        assert f"]({target})" in text, target
