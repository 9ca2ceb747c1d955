"""Replica construction from a deployment spec (one place, for the world and for probes)."""
from __future__ import annotations

from sim.serving.engine import Replica


def replica_from_spec(env, dep, step_model, index: int = -1, name: str = "probe",
                      per_iteration: bool = False, on_complete=lambda r, t: None, **kw) -> Replica:
    """A :class:`Replica` of deployment spec ``dep`` (its batching limits and TP); with the
    defaults, a detached one that is never scheduled (for capacity arithmetic)."""
    b = dep.batching
    return Replica(env, index, name, step_model, max_num_seqs=b.max_num_seqs,
                   max_batched_tokens=b.max_batched_tokens, block_size_tokens=b.block_size_tokens,
                   chunked_prefill=b.chunked_prefill, per_iteration=per_iteration,
                   max_waiting=b.max_waiting, reserve_full_output=(b.kv_admission == "reserve_full_output"),
                   on_complete=on_complete, gpus=dep.tp, **kw)
