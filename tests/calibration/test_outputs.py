"""Refits write into a checkout's models/ or --out, never into an installed package."""
from __future__ import annotations

import pytest
from pathlib import Path

from sim.calibration import outputs
from sim.cli import main
from sim.core.errors import UserError


def fake_checkout(root, name="sovsim"):
    (root / "models").mkdir(parents=True)
    (root / "pyproject.toml").write_text(f'[project]\nname = "{name}"\nversion = "0"\n')
    return root


def test_checkout_found_from_a_subfolder(tmp_path):
    root = fake_checkout(tmp_path / "repo")
    sub = root / "experiments" / "deep"
    sub.mkdir(parents=True)
    assert outputs.checkout_root(sub) == root.resolve()
    assert outputs.refit_models_dir(None, "calibrate", start=sub) == root.resolve() / "models"


def test_another_project_is_no_checkout(tmp_path):
    fake_checkout(tmp_path / "other", name="not-sovsim")
    assert outputs.checkout_root(tmp_path / "other") is None


def test_out_wins_and_a_file_is_refused(tmp_path):
    fake_checkout(tmp_path / "repo")
    assert outputs.refit_models_dir(tmp_path / "mine", "calibrate", start=tmp_path / "repo") == tmp_path / "mine"
    (tmp_path / "f").write_text("x")
    with pytest.raises(UserError, match="is a file"):
        outputs.refit_models_dir(tmp_path / "f", "calibrate")


@pytest.fixture
def installed(tmp_path, monkeypatch):
    """As under a non-editable install: the package's models/ in site-packages, cwd no checkout."""
    site = tmp_path / "site-packages" / "sim" / "models"
    site.mkdir(parents=True)
    monkeypatch.setattr(outputs, "models_dir", lambda: site)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return site


def test_installed_outside_a_checkout_is_refused(installed):
    with pytest.raises(UserError, match="pass --out DIR"):
        outputs.refit_models_dir(None, "fit-demand")


@pytest.mark.parametrize("argv", [["fit-demand"], ["calibrate"], ["calibrate", "--throughput"]])
def test_refit_commands_refuse_in_one_line_before_any_work(installed, capsys, argv):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "--out DIR" in err, err
    assert list(installed.iterdir()) == []


def test_editable_install_writes_beside_its_checkout(tmp_path, monkeypatch):
    root = fake_checkout(tmp_path / "repo")
    monkeypatch.setattr(outputs, "models_dir", lambda: root / "models")
    monkeypatch.chdir(tmp_path)
    assert outputs.refit_models_dir(None, "calibrate") == root / "models"


def _shared_calibration():
    import os
    from pathlib import Path
    root = Path(__file__).resolve().parents[2]
    for cand in (os.environ.get("SOVSIM_SHARED_CALIBRATION"), root.parent / "shared" / "calibration",
                 root.parents[1] / "shared" / "calibration"):
        if cand and (Path(cand) / "vidur").is_dir():
            return Path(cand)
    return None


@pytest.mark.skipif(_shared_calibration() is None, reason="needs the shared calibration folder beside the checkout")
def test_import_measurements_regenerates_the_committed_files_byte_for_byte(tmp_path):
    import filecmp

    from sim.calibration.measurements import import_measurements
    from sim.core.resources import model_file

    for p in import_measurements(_shared_calibration(), tmp_path):
        rel = p.relative_to(tmp_path)
        assert filecmp.cmp(p, model_file("measurements", *rel.parts), shallow=False), rel


def test_reports_go_to_the_checkouts_results_from_a_subfolder(tmp_path):
    root = fake_checkout(tmp_path / "repo")
    (root / "docs").mkdir()
    assert outputs.results_dir(None, "results/calibration", start=root / "docs") == root.resolve() / "results/calibration"
    assert outputs.results_dir("mine", "results/calibration", start=root) == Path("mine")
    assert outputs.results_dir(None, "results/x", start=tmp_path) == Path("results/x")
