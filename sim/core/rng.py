"""Named random streams from one root seed.

``RandomStreams(seed).generator("workload/chat/arrivals")`` returns a generator whose
stream depends only on the root seed and the name: adding a tenant, a failure process or a
market process never shifts another component's draws.
"""
from __future__ import annotations

import hashlib

import numpy as np


def _name_key(name: str) -> int:
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "little")


class RandomStreams:
    def __init__(self, seed: int):
        self.seed = int(seed)

    def seed_sequence(self, name: str) -> np.random.SeedSequence:
        return np.random.SeedSequence(entropy=self.seed, spawn_key=(_name_key(name),))

    def generator(self, name: str) -> np.random.Generator:
        return np.random.Generator(np.random.PCG64(self.seed_sequence(name)))
