"""The catalog is found both installed (``sim.models``) and from a source tree."""

from sim.core import resources


def test_installed_catalog_has_the_gpu_table():
    assert resources.model_file("gpus.csv").is_file()


def test_source_tree_fallback_points_at_the_models_folder(monkeypatch):
    # Running from a clean clone with the package installed elsewhere, ``sim`` is the source
    # tree and ``sim.models`` is not importable: the fallback must name ``<root>/models``.
    def missing(_name):
        raise ModuleNotFoundError("No module named 'sim.models'")

    monkeypatch.setattr(resources.resources, "files", missing)
    folder = resources.models_dir()
    assert folder.name == "models"
    assert (folder / "gpus.csv").is_file()
    assert (folder / "measurements").is_dir()
