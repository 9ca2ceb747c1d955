"""Routing across replicas, with residency as an invariant.

Each workload has a static list of *eligible* replicas: they serve its model and sit at a
site its residency rule allows.  A request is only ever given to one of those that is up;
when none is up it waits (up to ``max_wait_s``) and is then rejected with the reason
``no_eligible_capacity``.  It is never served elsewhere.
"""
from __future__ import annotations

from collections import deque
from typing import Callable

import numpy as np

from sim.serving.engine import Replica, Request


class Router:
    def __init__(self, env, replicas: list[Replica], eligible: list[list[int]], policy: str,
                 rng: np.random.Generator, max_wait_s: float,
                 on_reject: Callable[[Request, str, float], None],
                 rtt_s: list[list[float]] | None = None):
        self.env = env
        self.replicas = replicas
        self.eligible = [[replicas[i] for i in idx] for idx in eligible]
        self.policy = policy
        self.rng = rng
        self.max_wait_s = max_wait_s
        self.on_reject = on_reject
        self.rtt_s = rtt_s  # [workload][replica] network round trip added to TTFT and E2E
        self.all_up = True
        self.parked: list[list[Request]] = [[] for _ in eligible]
        self._rr = [0] * len(eligible)
        self._u: list[float] = []
        self.violations = 0  # checked by tests: must stay 0
        # central queue: FCFS per workload, pulled by replicas with free sequence slots
        self.central = policy == "central_queue"
        self.queues: list[deque[Request]] = [deque() for _ in eligible]
        self.serves: list[list[int]] = [[] for _ in replicas]  # workloads each replica may serve
        for w, idx in enumerate(eligible):
            for i in idx:
                self.serves[i].append(w)
        if self.central:
            for rep in replicas:
                rep.on_slots_free = self.pull

    def _uniform(self) -> float:
        if not self._u:
            self._u = self.rng.random(4096).tolist()
        return self._u.pop()

    def submit(self, r: Request):
        cands = self.eligible[r.workload]
        if not self.all_up:
            cands = [c for c in cands if c.up and c.accepting]
        if not cands:
            self._park(r)
            return
        self._dispatch(r, cands)

    def _dispatch(self, r: Request, cands: list[Replica]):
        n = len(cands)
        if self.central:
            free = [c for c in cands if c.free_slots() > 0]
            if not free or self.queues[r.workload]:
                self.queues[r.workload].append(r)
                return
            rep = free[0]
            best = rep.outstanding_tokens
            for c in free:
                if c.outstanding_tokens < best:
                    rep = c
                    best = c.outstanding_tokens
        elif n == 1:
            rep = cands[0]
        elif self.policy == "least_outstanding":
            rep = cands[0]
            best = rep.outstanding_tokens
            for c in cands:
                if c.outstanding_tokens < best:
                    rep = c
                    best = c.outstanding_tokens
        elif self.policy == "power_of_two":
            i = int(self._uniform() * n)
            j = int(self._uniform() * (n - 1))
            if j >= i:
                j += 1
            a, b = cands[i], cands[j]
            rep = b if b.outstanding_tokens < a.outstanding_tokens else a
        else:  # round_robin
            k = self._rr[r.workload]
            rep = cands[k % n]
            self._rr[r.workload] = k + 1
        self._send(r, rep)

    def _send(self, r: Request, rep: Replica):
        if self.rtt_s is not None:
            r.latency_s = self.rtt_s[r.workload][rep.index]
        rep.enqueue(r)

    def pull(self, rep: Replica):
        """A replica has free sequence slots: hand it the oldest queued eligible requests."""
        if not rep.accepting:
            return
        queues = self.queues
        serves = self.serves[rep.index]
        while rep.free_slots() > 0:
            best = None
            for w in serves:
                q = queues[w]
                if q and (best is None or q[0].arrival_s < queues[best][0].arrival_s):
                    best = w
            if best is None:
                return
            self._send(queues[best].popleft(), rep)

    def queued(self) -> list[Request]:
        return [r for q in self.queues for r in q]

    # ------------------------------------------------------------------ no capacity
    def _park(self, r: Request):
        self.parked[r.workload].append(r)
        ev = self.env.timeout(self.max_wait_s)
        ev.callbacks.append(lambda _ev, r=r: self._expire(r))

    def _expire(self, r: Request):
        lst = self.parked[r.workload]
        if r in lst:
            lst.remove(r)
            self.on_reject(r, "no_eligible_capacity", self.env.now)

    def add_replica(self, rep: Replica, workloads: list[int]):
        """A replica joined the fleet (capacity arrived); ``workloads`` may use it."""
        self.serves.append(list(workloads))
        for w in workloads:
            self.eligible[w].append(rep)
        if self.central:
            rep.on_slots_free = self.pull
        self.replica_state_changed()
        if self.central:
            self.pull(rep)

    def remove_replica(self, rep: Replica):
        """A replica left the fleet for good (its capacity was released): no candidate lists
        hold it any more, so the fast all-up path comes back once the others are up."""
        for w in self.serves[rep.index]:
            self.eligible[w].remove(rep)
        self.replica_state_changed()

    def replica_state_changed(self):
        """Call after a replica fails, is repaired, joins or starts draining: retries
        parked requests."""
        self.all_up = all(rep.up and rep.accepting for rep in self.replicas if rep.retired_s is None)
        for w, lst in enumerate(self.parked):
            if not lst:
                continue
            cands = [c for c in self.eligible[w] if c.up and c.accepting]
            if not cands:
                continue
            self.parked[w] = []
            for r in lst:
                self._dispatch(r, cands)

    def parked_count(self) -> int:
        return sum(len(p) for p in self.parked)
