"""The framework overheads of the ``trtllm`` profiles, set for a while (``sovsim calibrate
--throughput``, ``sovsim validate`` and its diagnosis tools; docs/perf.md, "Framework profiles").

:func:`framework_overheads` sets them on every loaded calibration for the duration of a ``with``
block; :func:`intercept_fold` gives the overheads a TensorRT-LLM serving point of one GPU is scored
with, the per-layer term chosen without that GPU's points (``intercept_folds``, written by
:func:`sim.calibration.throughput_fit.run_fit`).
"""
from __future__ import annotations

from contextlib import contextmanager

from sim.core.errors import UserError
from sim.perf import catalog
from sim.perf.roofline import load_params

PROFILE = "trtllm"
OLD_PROFILE = "trtllm-v0.9"
_KEYS = ("iteration_overhead_s", "per_seq_overhead_s", "kernel_time_scale", "per_layer_overhead_s")


@contextmanager
def framework_overheads(a_s: float, b_s: float, scale: float = 1.0, c_s: float = 0.0):
    """Temporarily set the per-iteration / per-sequence / per-layer (``c_s``) overheads and the kernel-time scale of
    every loaded GPU's calibration (the engine builds its step model from
    :func:`sim.perf.roofline.load_params`), and of its ``trtllm`` framework profile, which the
    ``trtllm-*`` engine profiles read instead (``validate.overhead_grid`` on ``aiconfigurator``).
    The per-release profiles (``trtllm-v0.14`` ...) take the three CPU overheads, and their own
    kernel-time scale is multiplied by ``scale`` / the default's (``validate.overhead_grid`` on
    ``online``: unchanged at the default's scale)."""
    saved = []
    for gid in catalog.gpus():
        try:
            p = load_params(gid)
        except UserError:
            continue
        profs = {name: dict(prof) for name, prof in p.framework_profiles.items()
                 if name == PROFILE or (name.startswith(PROFILE + "-v") and name != OLD_PROFILE)}
        saved.append((p, p.iteration_overhead_s, p.per_seq_overhead_s, p.kernel_time_scale,
                      p.per_layer_overhead_s, profs))
        ratio = scale / p.kernel_time_scale
        p.iteration_overhead_s, p.per_seq_overhead_s, p.kernel_time_scale = a_s, b_s, scale
        p.per_layer_overhead_s = c_s
        for name, prof0 in profs.items():
            p.framework_profiles[name].update(
                iteration_overhead_s=a_s, per_seq_overhead_s=b_s, per_layer_overhead_s=c_s,
                kernel_time_scale=scale if name == PROFILE else prof0.get("kernel_time_scale", 1.0) * ratio)
    try:
        yield
    finally:
        for p, a0, b0, s0, c0, profs in saved:
            p.iteration_overhead_s, p.per_seq_overhead_s, p.kernel_time_scale = a0, b0, s0
            p.per_layer_overhead_s = c0
            for name, prof0 in profs.items():
                p.framework_profiles[name].clear()
                p.framework_profiles[name].update(prof0)


def intercept_fold(gpu: str) -> tuple[float, float, float, float] | None:
    """``(a, b, scale, c)`` for a TensorRT-LLM serving point of ``gpu`` in the ``aiconfigurator``
    family: the ``trtllm`` profile with its per-layer term chosen without that GPU's points.  While
    the profile in force is the committed one this is the stored fold; when it was changed in memory
    (``framework_overheads``, a test), the fold's difference from the committed profile is applied to
    it (per-layer and per-iteration terms added, per-sequence term and scale multiplied), so the
    change still shows.  None without folds in the calibration."""
    prof = load_params(gpu).framework_profiles.get(PROFILE, {})
    folds = prof.get("intercept_folds", {})
    fold, base = folds.get("gpu", {}).get(gpu), folds.get("committed")
    if not fold or not base:
        return None
    if all(prof.get(k) == base[k] for k in _KEYS):
        return tuple(fold[k] for k in _KEYS)

    def ratio(k):
        return fold[k] / base[k] if base[k] else 1.0
    return (prof["iteration_overhead_s"] + fold["iteration_overhead_s"] - base["iteration_overhead_s"],
            prof["per_seq_overhead_s"] * ratio("per_seq_overhead_s"),
            prof["kernel_time_scale"] * ratio("kernel_time_scale"),
            prof["per_layer_overhead_s"] + fold["per_layer_overhead_s"] - base["per_layer_overhead_s"])
