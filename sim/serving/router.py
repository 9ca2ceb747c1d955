"""Routing across replicas, with residency as an invariant.

Each workload has a static list of *eligible* replicas: they serve its model and sit at a
site its residency rule allows.  A request is only ever given to one of those that is up;
when none is up it waits (up to ``max_wait_s``) and is then rejected with the reason
``no_eligible_capacity``.  It is never served elsewhere.

Every policy costs O(log N) or O(1) per request in the number N of eligible replicas.
Workloads with the same eligible list share one :class:`LeastLoaded` group; from
``Router.heap_min_replicas`` members on, a lazy heap gives the least-outstanding replica
(ties to the earliest in the list, exactly as a scan would) in O(log N); smaller groups
scan, which is cheaper there (a scan of a few dozen replicas costs less than keeping the
heap current on every completion).  The up-and-accepting sublists that every policy draws
from are rebuilt only when a replica changes state.

Admission control (all off by default): ``max_queue`` bounds each workload's central queue,
a replica's ``max_waiting`` bounds the requests waiting on it, and ``ttft_shed_s`` rejects
an arrival whose predicted TTFT (:meth:`Router.predicted_ttft_s`) exceeds it.  A request
moved off a failed or retired replica (``restarts > 0``) is never refused.
"""
from __future__ import annotations

import heapq
from collections import deque
from typing import Callable

import numpy as np

from sim.perf.series import prefill_attn_pairs
from sim.serving.engine import Replica, Request

_RANK_BITS = 32
_RANK_MASK = (1 << _RANK_BITS) - 1


class LeastLoaded:
    """The replica with the fewest outstanding tokens among a group's members, ties to the
    lowest rank (position in the eligible list), under a validity filter.

    A lazy min-heap of integer keys ``outstanding << 32 | rank``.  Each member has at most
    one *live* key (``live[rank]``); other keys in the heap are stale and are dropped when
    they surface.  The invariant: every valid member has a live key no larger than its
    current key.  Increases (a request assigned) need no update: a live key that surfaces
    with an out-of-date load is re-keyed in place.  Decreases (a request finished) must be
    reported through :meth:`lowered`; so must a member becoming valid again.  Then the top
    live, valid, up-to-date key is the least (load, rank) of all valid members.
    """

    __slots__ = ("members", "rank", "live", "heap", "heaped")

    def __init__(self, members: list[Replica], heaped: bool = True):
        self.heaped = heaped   # False: the router scans its candidate list instead
        self.members: list[Replica | None] = list(members)
        self.rank: dict[int, int] = {rep.index: k for k, rep in enumerate(members)}
        self.live: list[int] = [-1] * len(members)
        self.heap: list[int] = []

    def add(self, rep: Replica):
        self.rank[rep.index] = len(self.members)
        self.members.append(rep)
        self.live.append(-1)

    def remove(self, rep: Replica):
        k = self.rank.pop(rep.index)
        self.members[k] = None
        self.live[k] = -1

    def refresh(self, valid: Callable[[Replica], bool]):
        """Rebuild from the members' current state (after a replica changed state)."""
        live = self.live
        heap = []
        for k, rep in enumerate(self.members):
            if rep is not None and valid(rep):
                key = (rep.outstanding_tokens << _RANK_BITS) | k
                live[k] = key
                heap.append(key)
            else:
                live[k] = -1
        heapq.heapify(heap)
        self.heap = heap

    def lowered(self, rep: Replica):
        """``rep``'s load fell (or it may be valid again): make its live key current."""
        k = self.rank.get(rep.index)
        if k is None:
            return
        key = (rep.outstanding_tokens << _RANK_BITS) | k
        old = self.live[k]
        if old < 0 or key < old:
            self.live[k] = key
            heap = self.heap
            heapq.heappush(heap, key)
            if len(heap) > 2 * len(self.members) + 64:
                self.heap = [x for x in self.live if x >= 0]
                heapq.heapify(self.heap)

    def best(self, need_slot: bool = False) -> Replica | None:
        """The least-loaded member that is up and accepting (and, with ``need_slot``, has a
        free sequence slot); None when there is none."""
        heap = self.heap
        live = self.live
        members = self.members
        while heap:
            key = heap[0]
            k = key & _RANK_MASK
            if live[k] != key:
                heapq.heappop(heap)          # stale
                continue
            rep = members[k]
            if rep is None or not (rep.up and rep.accepting) or (need_slot and rep.free_slots() <= 0):
                heapq.heappop(heap)          # comes back through refresh() or lowered()
                live[k] = -1
                continue
            cur = (rep.outstanding_tokens << _RANK_BITS) | k
            if cur != key:
                live[k] = cur
                heapq.heapreplace(heap, cur)
                continue
            return rep
        return None


def _up(rep: Replica) -> bool:
    return rep.up and rep.accepting


def _up_with_slot(rep: Replica) -> bool:
    return rep.up and rep.accepting and rep.free_slots() > 0


class Router:
    heap_min_replicas = 48   # groups at least this large use a heap, smaller ones a scan

    def __init__(self, env, replicas: list[Replica], eligible: list[list[int]], policy: str,
                 rng: np.random.Generator, max_wait_s: float,
                 on_reject: Callable[[Request, str, float], None],
                 rtt_s: list[list[float]] | None = None, max_queue: int | None = None,
                 ttft_shed_s: float | None = None):
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
        self.max_queue = max_queue
        self.ttft_shed_s = ttft_shed_s
        self._check_replica = ttft_shed_s is not None or any(rep.max_waiting is not None for rep in replicas)
        # central queue: FCFS per workload, pulled by replicas with free sequence slots
        self.central = policy == "central_queue"
        self.queues: list[deque[Request]] = [deque() for _ in eligible]
        self.serves: list[list[int]] = [[] for _ in replicas]  # workloads each replica may serve
        for w, idx in enumerate(eligible):
            for i in idx:
                self.serves[i].append(w)
        # least-loaded heaps, one per group of workloads with the same eligible list
        self._heaped = policy in ("least_outstanding", "central_queue")
        self._valid = _up_with_slot if self.central else _up
        self.cands: list[list[Replica]] = self.eligible  # up-and-accepting eligible replicas
        self._regroup()
        if self.central:
            for rep in replicas:
                rep.on_slots_free = self.pull

    # ------------------------------------------------------------------ load heaps
    def _regroup(self):
        """Group workloads by eligible list and build one heap per group."""
        groups: dict[tuple[int, ...], LeastLoaded] = {}
        self.group: list[LeastLoaded] = []
        for lst in self.eligible:
            key = tuple(rep.index for rep in lst)
            g = groups.get(key)
            if g is None:
                g = groups[key] = LeastLoaded(lst, self._heaped and len(lst) >= self.heap_min_replicas)
            self.group.append(g)
        self.groups = list(groups.values())
        self._groups_of: list[list[LeastLoaded]] = [[] for _ in self.replicas]
        for g in self.groups:
            for rep in g.members:
                if rep is not None:
                    self._groups_of[rep.index].append(g)
        for g in self.groups:
            if g.heaped:
                g.refresh(self._valid)
        for rep in self.replicas:
            self._hook(rep)

    def _hook(self, rep: Replica):
        """Have ``rep`` report falls of its load to the heaps that hold it."""
        gs = [g for g in self._groups_of[rep.index] if g.heaped]
        if not gs:
            rep.on_unload = None
        elif len(gs) == 1:
            rep.on_unload = gs[0].lowered
        else:
            rep.on_unload = self._lowered

    def _lowered(self, rep: Replica):
        for g in self._groups_of[rep.index]:
            if g.heaped:
                g.lowered(rep)

    def _uniform(self) -> float:
        if not self._u:
            self._u = self.rng.random(4096).tolist()
        return self._u.pop()

    def submit(self, r: Request):
        cands = self.cands[r.workload]
        if not cands:
            self._park(r)
            return
        self._dispatch(r, cands)

    def _dispatch(self, r: Request, cands: list[Replica]) -> None:
        rep: Replica | None = None
        if self.central:
            q = self.queues[r.workload]
            if not q:
                g = self.group[r.workload]
                if g.heaped:
                    rep = g.best(True)
                else:
                    best = 0
                    for c in cands:
                        if c.free_slots() > 0 and (rep is None or c.outstanding_tokens < best):
                            rep = c
                            best = c.outstanding_tokens
            if rep is None:
                if self.max_queue is not None and len(q) >= self.max_queue and r.restarts == 0:
                    self.on_reject(r, "queue_full", self.env.now)
                else:
                    q.append(r)
                return
        elif self.policy == "least_outstanding":
            g = self.group[r.workload]
            if g.heaped:
                rep = g.best()
            else:
                rep = cands[0]
                best = rep.outstanding_tokens
                for c in cands:
                    if c.outstanding_tokens < best:
                        rep = c
                        best = c.outstanding_tokens
        else:
            n = len(cands)
            if n == 1:
                rep = cands[0]
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
        assert rep is not None   # cands holds an up replica, so every policy finds one
        if self._check_replica and r.restarts == 0:
            reason = self._refusal(r, rep)
            if reason is not None:
                self.on_reject(r, reason, self.env.now)
                return
        self._send(r, rep)

    def _refusal(self, r: Request, rep: Replica) -> str | None:
        """Why an arrival routed to ``rep`` is refused (None: admitted)."""
        if rep.max_waiting is not None and len(rep.waiting) >= rep.max_waiting:
            return "queue_full"
        if self.ttft_shed_s is not None and self.predicted_ttft_s(r, rep) > self.ttft_shed_s:
            return "ttft_shed"
        return None

    def predicted_ttft_s(self, r: Request, rep: Replica) -> float:
        """A lower bound on ``r``'s TTFT at ``rep``: the network round trip plus the step
        model's time to prefill, in one iteration with no decodes, the prompt tokens still
        to prefill on ``rep`` after the iteration in progress (admitted and waiting) and
        ``r``'s own.  It ignores the rest of the iteration in progress, decodes, the token
        budget and waits for sequence slots or KV blocks, each of which only makes the real
        TTFT longer."""
        window = rep.window
        tokens = r.target
        pairs = prefill_attn_pairs(0, r.target, window)
        in_progress = rep.run_chunks if rep.pending is not None else ()
        for q in rep.prefilling:
            done = q.prefilled + (q.chunk if q in in_progress else 0)
            c = q.target - done
            tokens += c
            pairs += prefill_attn_pairs(done, c, window)
        for q in rep.waiting:
            tokens += q.target
            pairs += prefill_attn_pairs(0, q.target, window)
        rtt = self.rtt_s[r.workload][rep.index] if self.rtt_s is not None else 0.0
        return rtt + rep.model.mixed_step_s(0, 0, tokens, pairs)

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
                break
            self._send(queues[best].popleft(), rep)
        if rep.free_slots() > 0:
            self._lowered(rep)   # it may take arrivals again

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
        if rep.max_waiting is not None:
            self._check_replica = True
        self.serves.append(list(workloads))
        self._groups_of.append([])
        for w in workloads:
            self.eligible[w].append(rep)
        # the new replica joins whole groups (their workloads keep one eligible list);
        # a group only some of whose workloads may use it splits: regroup
        ws = set(workloads)
        touched = {id(self.group[w]): self.group[w] for w in workloads}
        if all(ws.issuperset(i for i, g in enumerate(self.group) if g is t) for t in touched.values()):
            for g in touched.values():
                g.add(rep)
                self._groups_of[rep.index].append(g)
                if (not g.heaped and self._heaped
                        and sum(m is not None for m in g.members) >= self.heap_min_replicas):
                    g.heaped = True      # grown past the scan: refreshed below
                    for m in g.members:
                        if m is not None:
                            self._hook(m)
            self._hook(rep)
        else:
            self._regroup()
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
        for g in self._groups_of[rep.index]:
            g.remove(rep)
        self._groups_of[rep.index] = []
        rep.on_unload = None
        self.replica_state_changed()

    def replica_state_changed(self):
        """Call after a replica fails, is repaired, joins or starts draining: rebuilds the
        candidate lists and heaps, and retries parked requests."""
        self.all_up = all(rep.up and rep.accepting for rep in self.replicas if rep.retired_s is None)
        if self.all_up:
            self.cands = self.eligible
        else:
            by_group = {id(g): [c for c in g.members if c is not None and c.up and c.accepting]
                        for g in self.groups}
            self.cands = [by_group[id(g)] for g in self.group]
        for g in self.groups:
            if g.heaped:
                g.refresh(self._valid)
        for w, lst in enumerate(self.parked):
            if not lst:
                continue
            cands = self.cands[w]
            if not cands:
                continue
            self.parked[w] = []
            for r in lst:
                self._dispatch(r, cands)

    def parked_count(self) -> int:
        return sum(len(p) for p in self.parked)
