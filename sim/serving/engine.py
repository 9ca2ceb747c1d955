"""The serving engine: one replica's iteration-level continuous batching (the hot path).

A replica is one model instance on ``tp`` GPUs.  It runs vLLM-style continuous batching:

* at every iteration boundary the scheduler (:meth:`Replica._schedule`) first makes room
  for the running decodes (one new KV slot each; when the paged cache has no free block the
  newest running sequence is preempted and later recomputed), then spends the per-iteration
  token budget on prefill chunks of sequences already admitted, then admits waiting
  sequences first-come-first-served while their prompt's KV blocks fit and the running cap
  allows;
* an iteration takes the time :mod:`sim.perf.step` gives for its composition.

**Event skipping.**  When an iteration carries only decodes, every following iteration
does too until something changes the composition: a sequence completes, the cache runs
out of blocks, a sequence's attention reaches the sliding window, or an arrival becomes
admissible.  All four are computable in closed form, so the replica schedules *one* event
for the whole run (:meth:`StepTimeModel.decode_run_s`).  ``per_iteration`` mode caps runs
at one step; both modes execute the same scheduler at every boundary they visit, and an
arrival cuts a run exactly at the boundary where the per-iteration scheduler would admit
it, so both give the same timestamps up to float rounding.

Decode state is kept in aggregates so that a run costs O(1) and a composition change
O(log n): a decode-step counter ``x``; for each decoding sequence an offset ``u`` with
``cached_tokens = u + x``; running sums of attended tokens; a histogram of ``u mod
block_size`` from which the blocks used at any future step follow in O(block_size).
"""
from __future__ import annotations

import heapq
from collections import deque
from heapq import heappop, heappush
from typing import Any, Callable, Final

from sim.perf.series import decode_run_s, decode_steps_before, prefill_attn_pairs
from sim.perf.step import StepTimeModel

_NO_CHUNKS: Final[list] = []  # shared empty batch of prefill chunks (never appended to)

# request states (Request.state); a rejected request is never on a replica again
WAITING, PREFILL, DECODE, DONE, REJECTED = 0, 1, 2, 3, 4


class Request:
    """One inference request; the tidy per-request record is derived from these fields."""

    __slots__ = (
        "rid", "workload", "arrival_s", "prompt_tokens", "output_tokens", "generated",
        "admitted_s", "first_token_s", "completion_s", "replica", "preemptions", "state",
        "target", "prefilled", "blocks", "g0", "d0", "u", "finish_x", "cross_x", "capped",
        "chunk", "outcome", "reason", "latency_s", "restarts",
    )

    def __init__(self, rid: int, workload: int, arrival_s: float, prompt_tokens: int,
                 output_tokens: int, latency_s: float = 0.0):
        self.rid = rid
        self.workload = workload
        self.arrival_s = arrival_s
        self.prompt_tokens = prompt_tokens
        self.output_tokens = output_tokens
        self.latency_s = latency_s      # network latency added to TTFT and E2E
        self.generated = 0              # tokens emitted so far (valid while not decoding)
        self.admitted_s = -1.0          # first admission to a batch (start of service)
        self.first_token_s = -1.0
        self.completion_s = -1.0
        self.replica = -1
        self.preemptions = 0
        self.restarts = 0               # requeues after a replica failure
        self.state = WAITING
        self.target = prompt_tokens     # tokens to (re)compute in prefill
        self.prefilled = 0
        self.blocks = 0                 # KV blocks held while prefilling
        self.g0 = 0
        self.d0 = 0
        self.u = 0
        self.finish_x = 0
        self.cross_x = 0
        self.capped = False
        self.chunk = 0
        self.outcome = ""
        self.reason = ""


class Wake:
    """The lightest event SimPy's ``Environment.step`` can process: a callback list and an
    ``ok`` flag.  The engine pushes it straight onto the event queue with the same
    ``(time, NORMAL, eid)`` key ``env.timeout`` would give it, so the order of events is
    unchanged; it skips ``Timeout``'s construction and ``Environment.schedule``'s call.

    SimPy calls :func:`_fire`, which runs ``callback(event)`` and then every Wake that is next
    on the queue itself (:func:`_run_wakes`), so that a run of engine events costs no trip
    through ``Environment.step``."""

    __slots__ = ("callbacks", "_ok", "_value", "cb", "env")

    def __init__(self, env: Any, callback: Callable[[Any], None]):
        self.callbacks: list | None = [_fire]   # SimPy sets it to None once processed
        self._ok = True
        self._value: Any = None
        self.cb = callback
        self.env = env


def _fire(ev: Wake) -> None:
    ev.cb(ev)
    _run_wakes(ev.env)


def _run_wakes(env: Any) -> None:
    """Process the events at the head of ``env``'s queue for as long as they are Wakes, in
    queue order, exactly as ``Environment.step`` would (clock to the event's time, callbacks
    cleared, then called).  It stops at the first other event (a SimPy timeout or process
    event, or the ``until`` event of ``env.run``) and leaves it to SimPy.  A Wake's callback
    that ends in another :func:`_fire` (nested) returns at once: the outer loop goes on."""
    if getattr(env, "_sovsim_waking", False):
        return
    env._sovsim_waking = True
    try:
        queue = env._queue
        while queue:
            item = queue[0]
            ev = item[3]
            if type(ev) is not Wake:
                break
            heappop(queue)
            env._now = item[0]
            ev.callbacks = None
            ev.cb(ev)
    finally:
        env._sovsim_waking = False


def wake_after(env: Any, delay: float | int, callback: Callable[[Any], None], priority: int = 1) -> Wake:
    """Call ``callback(event)`` after ``delay`` (>= 0) simulated seconds: exactly
    ``env.timeout(delay).callbacks.append(callback)`` (priority 1 is SimPy's NORMAL), cheaper.
    (``delay`` keeps its type: an int 0 leaves SimPy's int start time an int.)"""
    ev = Wake(env, callback)
    heappush(env._queue, (env._now + delay, priority, next(env._eid), ev))
    return ev


class RequestIds:
    """Request ids in arrival order, shared by every arrival source of one world."""

    def __init__(self) -> None:
        self.next = 0

    def take(self) -> int:
        i = self.next
        self.next = i + 1
        return i


def admit_arrival(r: Request, now: float, on_arrival: Callable[[Request, float], None],
                  submit: Callable[[Request], None], reject: Callable[[Request, str, float], None],
                  max_tokens: list[int]) -> None:
    """An arrival, open- or closed-loop: counted by ``on_arrival``, then rejected when its
    prompt and output exceed ``max_tokens[workload]`` (the largest KV capacity an eligible
    replica has; 0: no eligible capacity at all), else handed to ``submit``."""
    on_arrival(r, now)
    cap = max_tokens[r.workload]
    if r.prompt_tokens + r.output_tokens > cap:
        reject(r, "exceeds_kv_capacity" if cap else "no_eligible_capacity", now)
    else:
        submit(r)


class ArrivalFeed:
    """The open-loop arrivals of one workload, from blocks of ``(times_s, prompt_tokens,
    output_tokens)`` lists (absolute, sorted times) that ``blocks`` yields lazily.

    Its event schedule is exactly that of a SimPy process yielding ``env.timeout(t - now)``
    before each arrival ``t`` later than now: a start event at priority URGENT now, then one
    NORMAL event per later arrival instant; arrivals at the current instant are handled in
    the same event.  Each arrival becomes a :class:`Request` (its time is ``t`` itself) and
    goes through :func:`admit_arrival` (``max_tokens``: a list the world keeps current as
    capacity arrives)."""

    def __init__(self, env: Any, workload: int, blocks: Any, ids: RequestIds,
                 on_arrival: Callable[[Request, float], None], submit: Callable[[Request], None],
                 reject: Callable[[Request, str, float], None], max_tokens: list[int]) -> None:
        self.env = env
        self.workload = workload
        self.blocks = blocks
        self.ids = ids
        self.on_arrival = on_arrival
        self.submit = submit
        self.reject = reject
        self.max_tokens = max_tokens
        self.times: list[float] = []
        self.prompts: list[int] = []
        self.outputs: list[int] = []
        self.i = 0
        self.waited = False   # the event for arrival ``i`` has fired
        self._cb = self._resume
        wake_after(env, 0, self._cb, priority=0)

    def _resume(self, ev: Any) -> None:
        env = self.env
        wi = self.workload
        ids = self.ids
        max_tokens = self.max_tokens
        times = self.times
        prompts = self.prompts
        outputs = self.outputs
        i = self.i
        n = len(times)
        while True:
            if i >= n:
                block = next(self.blocks, None)
                if block is None:
                    self.i = i
                    return
                times, prompts, outputs = block
                self.times, self.prompts, self.outputs = times, prompts, outputs
                i = 0
                n = len(times)
                continue
            t = times[i]
            if not self.waited:
                dt = t - env._now
                if dt > 0.0:
                    self.waited = True
                    self.i = i
                    wake_after(env, dt, self._cb)
                    return
            self.waited = False
            p = prompts[i]
            o = outputs[i]
            i += 1
            admit_arrival(Request(ids.take(), wi, t, p, o), t, self.on_arrival, self.submit,
                          self.reject, max_tokens)


class Replica:
    """One model replica with its own continuous-batching scheduler."""

    def __init__(self, env: Any, index: int, name: str, step_model: StepTimeModel, *,
                 max_num_seqs: int, max_batched_tokens: int, block_size_tokens: int,
                 chunked_prefill: bool, per_iteration: bool,
                 on_complete: Callable[[Request, float], None],
                 on_busy: Callable[["Replica", float, float, int, float], None] | None = None,
                 gpus: int = 1, site: str | None = None, deployment: int = 0,
                 on_slots_free: Callable[["Replica"], None] | None = None,
                 max_waiting: int | None = None, reserve_full_output: bool = False) -> None:
        self.env = env
        self.index = index
        self.name = name
        self.gpus = gpus
        self.site = site
        self.deployment = deployment
        self.model = step_model
        self.max_num_seqs = max_num_seqs
        self.max_batched_tokens = max_batched_tokens
        self.max_waiting = max_waiting  # admission: most requests waiting here (None: unbounded)
        self.bs = block_size_tokens
        self.chunked_prefill = chunked_prefill
        # KV admission: reserve the blocks of prompt + whole output at admission, never preempt
        # (TensorRT-LLM GUARANTEED_NO_EVICT); False: greedy, preempt by recompute (vLLM)
        self.reserve = reserve_full_output
        self.per_iteration = per_iteration
        self.total_blocks: int = step_model.kv_capacity_tokens // block_size_tokens
        self.window: int | None = step_model.window_tokens
        self.on_complete = on_complete
        self.on_busy = on_busy
        self.on_slots_free = on_slots_free   # central-queue router: pull waiting requests
        self.on_unload: Callable[["Replica"], None] | None = None  # router: outstanding_tokens fell
        self.up = True
        self.accepting = True           # False while draining (capacity leaving): no new requests
        self.added_s = env.now          # when the replica joined the fleet
        self.retired_s: float | None = None  # when its capacity left (None: still in the fleet)
        self.outstanding_tokens = 0     # router load: sum of prompt+output of assigned, unfinished
        self.n_assigned = 0
        self.busy_s: float = 0.0
        self.output_tokens = 0
        self.completed = 0
        self.prefill_tokens = 0
        self.iterations = 0
        self.events = 0
        self._cb_boundary = self._on_boundary
        self._cb_kick = self._on_kick
        self._reset_state()

    def _reset_state(self) -> None:
        self.waiting: deque[Request] = deque()
        self.running: dict[int, Request] = {}    # admission order: newest last
        self.prefilling: list[Request] = []
        self.x = 0
        self.n_dec = 0
        self.n_below = 0
        self.n_capped = 0
        self.s_below = 0
        self.q_sum = 0
        self.res_cnt = [0] * self.bs
        self.prefill_blocks = 0
        self.reserved_blocks = 0   # reserve_full_output: blocks reserved by the running requests
        self.fin_heap: list = []
        self.cross_heap: list = []
        self.pending: Wake | None = None
        self.busy = False
        self.run_t0: float = 0.0
        self.run_k = 0
        self.run_kv0 = 0
        self.run_growth = 0
        self.run_base: float = 0.0    # decode-only run: step time base + slope * attended tokens
        self.run_slope: float = 0.0
        self.run_decode_only = False
        self.run_chunks: list[Request] = []

    # ------------------------------------------------------------------ block accounting
    def used_dec(self, x: int) -> int:
        """KV blocks held by the decoding sequences once ``x`` decode steps are counted."""
        n = self.n_dec
        if n == 0:
            return 0
        bs = self.bs
        big = x // bs
        s = x - big * bs
        used = self.q_sum + n * big + n
        if s == 0:
            used -= self.res_cnt[0]
        elif s >= 2:
            used += sum(self.res_cnt[bs + 1 - s:])
        return used

    def blocks_for(self, tokens: int) -> int:
        return -(-tokens // self.bs)

    def kv_used_blocks(self) -> int:
        return self.used_dec(self.x) + self.prefill_blocks

    # ------------------------------------------------------------------ decode set
    def _add_decoder(self, r: Request) -> None:
        x = self.x
        r.state = DECODE
        r.g0 = r.generated
        r.d0 = x
        u = r.prompt_tokens + r.generated - x - 1
        r.u = u
        bs = self.bs
        q = u // bs
        rho = u - q * bs
        self.q_sum += q
        self.res_cnt[rho] += 1
        self.n_dec += 1
        r.finish_x = x + (r.output_tokens - r.generated)
        heappush(self.fin_heap, (r.finish_x, r.rid, r))
        w = self.window
        if w is not None and u + 1 + x > w:
            r.capped = True
            self.n_capped += 1
        else:
            r.capped = False
            self.s_below += u + 1
            self.n_below += 1
            if w is not None:
                r.cross_x = w - u
                heappush(self.cross_heap, (r.cross_x, r.rid, r))

    def _remove_decoder(self, r: Request) -> None:
        bs = self.bs
        u = r.u
        q = u // bs
        rho = u - q * bs
        self.q_sum -= q
        self.res_cnt[rho] -= 1
        self.n_dec -= 1
        if r.capped:
            self.n_capped -= 1
        else:
            self.s_below -= r.u + 1
            self.n_below -= 1
        r.generated = r.g0 + self.x - r.d0
        r.state = WAITING  # caller sets the final state

    def _kv_tokens(self) -> int:
        """Attended tokens of the decodes at the current counter."""
        kv = self.s_below + self.n_below * self.x
        w = self.window
        if self.n_capped and w is not None:
            kv += w * self.n_capped
        return kv

    def _process_crossings(self) -> None:
        heap = self.cross_heap
        x = self.x
        while heap and heap[0][0] <= x:
            cx, _, r = heappop(heap)
            if r.state != DECODE or r.capped or r.cross_x != cx or r.replica != self.index:
                continue
            r.capped = True
            self.s_below -= r.u + 1
            self.n_below -= 1
            self.n_capped += 1

    def _next_finish(self) -> int:
        heap = self.fin_heap
        while heap:
            fx, _, r = heap[0]
            if r.state == DECODE and r.finish_x == fx and r.replica == self.index:
                return fx
            heappop(heap)
        return -1

    def _next_cross(self) -> int:
        heap = self.cross_heap
        while heap:
            cx, _, r = heap[0]
            if r.state == DECODE and not r.capped and r.cross_x == cx and r.replica == self.index:
                return cx
            heappop(heap)
        return -1

    # ------------------------------------------------------------------ arrivals
    def enqueue(self, r: Request) -> None:
        """A routed request joins this replica's waiting queue."""
        r.replica = self.index
        r.state = WAITING
        self.outstanding_tokens += r.prompt_tokens + r.output_tokens
        self.n_assigned += 1
        had_waiting = bool(self.waiting)
        self.waiting.append(r)
        if not self.busy:
            if self.pending is None:
                self._kick()
            return
        if had_waiting or not self.run_decode_only or self.run_k <= 1:
            return
        # a decode run is in progress: cut it at the first boundary where r is admitted
        if len(self.running) >= self.max_num_seqs or self.n_dec >= self.max_batched_tokens:
            return
        elapsed = self.env._now - self.run_t0
        j = decode_steps_before(self.run_base, self.run_slope, self.run_kv0, self.run_growth,
                                elapsed, self.run_k)
        if j < 1:
            j = 1
        if j >= self.run_k:
            return
        if self.reserve:  # reservations do not change during a decode run
            if self.blocks_for(r.prompt_tokens + r.output_tokens) > self.total_blocks - self.reserved_blocks:
                return
        else:
            need = self.blocks_for(r.target)
            free = self.total_blocks - self.prefill_blocks - self.used_dec(self.x + j + 1)
            if need > free:
                return
        t_end = self.run_t0 + decode_run_s(self.run_base, self.run_slope, self.run_kv0, self.run_growth, j)
        self.run_k = j
        self._arm(t_end - self.env._now)

    def _kick(self) -> None:
        """Start scheduling at the current instant, after same-time arrivals are queued."""
        self.busy = True
        self.run_t0 = self.env._now
        self.run_k = 0
        self.run_decode_only = False
        self.run_chunks = []
        self.pending = wake_after(self.env, 0.0, self._cb_kick)

    def _on_kick(self, ev: Any) -> None:
        if ev is not self.pending:
            return
        self.pending = None
        self.busy = False
        self._schedule()

    def _arm(self, delay: float) -> None:
        self.pending = wake_after(self.env, delay if delay > 0.0 else 0.0, self._cb_boundary)
        self.events += 1

    # ------------------------------------------------------------------ the scheduler
    def _preempt_newest(self) -> None:
        rid, v = self.running.popitem()
        if v.state == DECODE:
            self._remove_decoder(v)
        else:  # prefilling
            self.prefilling.remove(v)
            self.prefill_blocks -= v.blocks
            v.blocks = 0
        if self.reserve:  # (never reached: reservations keep the cache from running out)
            self.reserved_blocks -= -(-(v.prompt_tokens + v.output_tokens) // self.bs)
        v.state = WAITING
        v.target = v.prompt_tokens + v.generated
        v.prefilled = 0
        v.preemptions += 1
        self.waiting.appendleft(v)

    def _schedule(self) -> None:
        """Plan the iteration starting now (the scheduler of every boundary)."""
        window = self.window
        if window is not None and self.cross_heap:
            self._process_crossings()
        x = self.x
        total = self.total_blocks
        preempted = False
        # 1. room for one more KV slot per running decode; ``used1``: the decodes' blocks at
        # the next step (admissions below do not change the decode set)
        used1 = 0
        if self.n_dec:
            used_dec = self.used_dec
            used1 = used_dec(x + 1)
            while used1 + self.prefill_blocks > total:
                self._preempt_newest()
                preempted = True
                if not self.n_dec:
                    used1 = 0
                    break
                used1 = used_dec(x + 1)
        n_dec = self.n_dec
        budget = self.max_batched_tokens - n_dec
        chunks: list[Request] = []
        prefill_tokens = 0
        pairs = 0.0
        # 2. continue prefills already admitted
        if self.prefilling and budget > 0:
            for r in self.prefilling:
                if budget <= 0:
                    break
                c = r.target - r.prefilled
                if c > budget:
                    c = budget
                r.chunk = c
                budget -= c
                prefill_tokens += c
                pairs += prefill_attn_pairs(r.prefilled, c, window)
                chunks.append(r)
        # 3. admit waiting requests, first come first served
        waiting = self.waiting
        if waiting and not preempted:
            running = self.running
            max_seqs = self.max_num_seqs
            bs = self.bs
            reserve = self.reserve
            chunked = self.chunked_prefill
            prefilling = self.prefilling
            now = self.env._now
            while waiting and len(running) < max_seqs and budget > 0:
                r = waiting[0]
                need = -(-r.target // bs)
                if reserve:
                    res = -(-(r.prompt_tokens + r.output_tokens) // bs)
                    if res > total - self.reserved_blocks:
                        break
                elif need > total - self.prefill_blocks - used1:
                    break
                if not chunked and r.target > budget and chunks:
                    break
                waiting.popleft()
                if reserve:
                    self.reserved_blocks += res
                r.state = PREFILL
                r.blocks = need
                r.prefilled = 0
                self.prefill_blocks += need
                running[r.rid] = r
                prefilling.append(r)
                if r.admitted_s < 0.0:
                    r.admitted_s = now
                c = r.target
                if chunked and c > budget:
                    c = budget
                r.chunk = c
                budget -= c
                prefill_tokens += c
                pairs += prefill_attn_pairs(0, c, window)
                chunks.append(r)
        model = self.model
        self.run_t0 = self.env._now
        if chunks:
            kv = self._kv_tokens() if n_dec else 0
            dt = model.mixed_step_s(n_dec, kv, prefill_tokens, pairs)
            self.run_k = 1
            self.run_decode_only = False
            self.run_chunks = chunks
            self.busy = True
            self._arm(dt)
            return
        if n_dec == 0:
            self.busy = False
            return
        # 4. a decode-only run: as many steps as nothing changes
        k = self._next_finish() - x
        if self.per_iteration or (preempted and waiting):
            k = 1
        if k > 1 and window is not None:
            cx = self._next_cross()
            if cx >= 0 and cx - x < k:
                k = cx - x
        if k > 1:
            k = self._steps_before_shortage(k, used1)
        growth = self.n_below
        kv0 = self._kv_tokens()
        self.run_k = k
        self.run_kv0 = kv0
        self.run_growth = growth
        self.run_decode_only = True
        self.run_chunks = _NO_CHUNKS
        self.busy = True
        base, slope = model.decode_coeffs(n_dec)   # fixed for the run: n_dec does not change
        self.run_base = base
        self.run_slope = slope
        self._arm(decode_run_s(base, slope, kv0, growth, k))

    def _steps_before_shortage(self, k: int, used1: int | None = None) -> int:
        """Largest ``j <= k`` such that steps ``x .. x+j-1`` all find their KV blocks
        (``used1``: ``used_dec(x + 1)`` when the caller has it)."""
        x = self.x
        free = self.total_blocks - self.prefill_blocks
        n = self.n_dec
        if used1 is None:
            used1 = self.used_dec(x + 1)
        # cheap bound: each sequence needs at most ceil(steps / bs) + 1 new blocks
        if used1 + n * (k // self.bs + 1) <= free:
            return k
        if self.used_dec(x + k) <= free:
            return k
        lo, hi = 1, k  # used_dec(x+lo) <= free (checked by the scheduler), used_dec(x+hi) > free
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if self.used_dec(x + mid) <= free:
                lo = mid
            else:
                hi = mid
        return lo

    # ------------------------------------------------------------------ iteration end
    def _on_boundary(self, ev: Any) -> None:
        if ev is not self.pending:
            return
        self.pending = None
        now = self.env._now
        t0 = self.run_t0
        k = self.run_k
        tokens = self.n_dec * k
        self.iterations += k
        self.busy_s += now - t0
        x = self.x = self.x + k
        chunks = self.run_chunks
        if chunks:
            prefilling = self.prefilling
            for r in chunks:
                c = r.chunk
                r.prefilled += c
                self.prefill_tokens += c
                if r.prefilled >= r.target:
                    prefilling.remove(r)
                    self.prefill_blocks -= r.blocks
                    r.blocks = 0
                    r.generated += 1
                    tokens += 1
                    if r.first_token_s < 0.0:
                        r.first_token_s = now
                    if r.generated >= r.output_tokens:
                        self._finish(r, now)
                    else:
                        self._add_decoder(r)
            self.run_chunks = _NO_CHUNKS
        self.output_tokens += tokens
        on_busy = self.on_busy
        if on_busy is not None:
            on_busy(self, t0, now, tokens, self.kv_used_blocks())
        # completions of decoders
        heap = self.fin_heap
        if heap and heap[0][0] <= x:
            index = self.index
            while heap and heap[0][0] <= x:
                fx, _, r = heappop(heap)
                if r.state != DECODE or r.finish_x != fx or r.replica != index:
                    continue
                self._remove_decoder(r)
                self._finish(r, now)
        if self.on_slots_free is not None and len(self.running) + len(self.waiting) < self.max_num_seqs:
            self.on_slots_free(self)
        self._schedule()

    def _finish(self, r: Request, now: float) -> None:
        del self.running[r.rid]
        if self.reserve:
            self.reserved_blocks -= -(-(r.prompt_tokens + r.output_tokens) // self.bs)
        r.state = DONE
        r.completion_s = now
        r.outcome = "completed"
        self.completed += 1
        self.outstanding_tokens -= r.prompt_tokens + r.output_tokens
        self.n_assigned -= 1
        if self.on_unload is not None:
            self.on_unload(self)
        self.on_complete(r, now)

    def partial_run(self, now: float) -> tuple[float, int]:
        """Busy seconds and emitted tokens of the iteration run in progress, up to ``now``
        (completed iteration boundaries only, for tokens)."""
        if not self.busy or self.pending is None:
            return 0.0, 0
        busy = now - self.run_t0
        if not self.run_decode_only or self.run_k <= 0:
            return busy, 0
        j = self._boundaries_done(now)
        return busy, self.n_dec * j

    def _boundaries_done(self, now: float) -> int:
        """Complete iterations of the current decode run at time ``now``."""
        base, slope, kv0, growth = self.run_base, self.run_slope, self.run_kv0, self.run_growth
        j = decode_steps_before(base, slope, kv0, growth, now - self.run_t0, self.run_k)
        while j > 0 and self.run_t0 + decode_run_s(base, slope, kv0, growth, j) > now:
            j -= 1
        return j

    # ------------------------------------------------------------------ faults
    def fail(self, now: float, keep_generated: bool = True) -> list[Request]:
        """Take the replica down: return every request it held (running first, oldest
        first, then waiting), with the tokens each had emitted at the last completed
        iteration boundary recorded in ``generated`` (or reset when ``keep_generated`` is
        false: the whole output is recomputed).  Requests are never lost: the caller
        requeues them."""
        if self.busy and self.pending is not None and self.run_decode_only and self.run_k > 0:
            j = self._boundaries_done(now)
            self.x += j
            self.output_tokens += self.n_dec * j
        if self.busy:
            self.busy_s += now - self.run_t0
        out: list[Request] = []
        for r in list(self.running.values()):
            if r.state == DECODE:
                r.generated = r.g0 + self.x - r.d0
            out.append(r)
        out.extend(self.waiting)
        for r in out:
            r.state = WAITING
            r.prefilled = 0
            r.blocks = 0
            r.replica = -1
            r.restarts += 1
            if not keep_generated:
                r.generated = 0
            r.target = r.prompt_tokens + r.generated
        self.outstanding_tokens = 0
        self.n_assigned = 0
        self.up = False
        self._reset_state()
        return out

    def repair(self, now: float) -> None:
        self.up = True

    def free_slots(self) -> int:
        return self.max_num_seqs - len(self.running) - len(self.waiting)
