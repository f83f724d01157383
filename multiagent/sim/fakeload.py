"""Agent loops against a model of the simulator on a fake clock: controller tests in milliseconds.

:func:`drive` runs ``loops`` callers, each repeating one task after another (up to ``attempts``
attempts, every attempt through the controller), against a server that admits requests through
the simulator's own :class:`~multiagent.sim.limits.TokenBucket` (one second of burst), serves at
most ``max_concurrency`` at once (queueing the rest, so round trips grow), fails ``error_rate``
of requests with 500 and answers a refused request at once with a 429 and its Retry-After. Time
is simulated, events are processed in time order, and nothing sleeps: the figures are exact and
the same on every machine, unlike ``bench backpressure``, which measures real HTTP.
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from multiagent.models.backpressure import BackpressureController, Ticket
from multiagent.sim.limits import TokenBucket
from multiagent.sim.model import rate_limit_error, server_error

#: How often a caller whose ticket waits on a free slot looks again (fake seconds).
_SLOT_POLL_S = 0.005
#: How long a refused request takes to come back.
_REFUSAL_RTT_S = 0.002


@dataclass(frozen=True)
class LoadPhase:
    """One phase of the model server: capacity, service time, faults."""

    name: str
    duration_s: float
    requests_per_s: float
    rtt_s: float = 0.14
    error_rate: float = 0.0
    max_concurrency: int | None = None

    @property
    def capacity_rps(self) -> float:
        """What the phase can answer per second: its rate, or its slots over the service time."""
        if self.max_concurrency is None:
            return self.requests_per_s
        return min(self.requests_per_s, self.max_concurrency / self.rtt_s)


@dataclass
class PhaseCount:
    """What the model server saw in one phase (by the time a request arrived)."""

    attempts: int = 0
    ok: int = 0
    rate_limited: int = 0
    errors: int = 0
    early: int = 0
    ok_after: dict[float, int] = field(default_factory=dict)
    tasks: int = 0
    tasks_failed: int = 0


@dataclass
class _Clock:
    now: float = 0.0

    def __call__(self) -> float:
        return self.now


@dataclass
class LoadResult:
    """Per-phase counts of one run."""

    phases: Sequence[LoadPhase]
    counts: list[PhaseCount]

    def goodput(self, index: int, *, after_s: float = 0.0) -> float:
        """Answers admitted in phase ``index`` from ``after_s`` into it, per second of capacity."""
        phase, count = self.phases[index], self.counts[index]
        ok = count.ok_after.get(after_s, count.ok) if after_s else count.ok
        return ok / (phase.capacity_rps * (phase.duration_s - after_s))

    def share_429(self, index: int) -> float:
        """Share of the phase's attempts answered 429."""
        count = self.counts[index]
        return count.rate_limited / count.attempts if count.attempts else 0.0


def drive(
    make: Callable[[Callable[[], float]], BackpressureController],
    phases: Sequence[LoadPhase],
    *,
    loops: int = 32,
    attempts: int = 5,
    after_s: Sequence[float] = (3.0,),
    seed: int = 1,
    headers: Callable[[LoadPhase], Mapping[str, str] | None] = lambda _: None,
) -> LoadResult:
    """Run ``loops`` agent loops through the controller ``make(clock)`` builds, over ``phases``.

    Args:
        make: Builds the controller on the fake clock it is given.
        phases: The server's schedule.
        loops: Concurrent callers.
        attempts: Attempts per task.
        after_s: Also count answers from this many seconds into each phase.
        seed: Seed of the error draws.
        headers: Response headers the server sends in a phase (``None``: none, as vLLM).
    """
    clock = _Clock()
    ctl = make(clock)
    rng = random.Random(seed)
    starts = [0.0, *itertools.accumulate(p.duration_s for p in phases)]
    end = starts[-1]
    counts = [PhaseCount() for _ in phases]
    bucket = TokenBucket.full(phases[0].requests_per_s, burst_s=1.0, now=0.0)
    serving: list[float] = []  # planned ends of admitted requests (a heap)
    retry_deadline = -math.inf
    current = 0
    events: list[tuple[float, int, str, int, Ticket | None, int]] = []
    order = itertools.count()
    state = {loop: [0, 0] for loop in range(loops)}  # attempts used, task phase

    def phase_at(moment: float) -> int:
        return max(0, min(len(phases) - 1, next(i for i, s in enumerate(starts) if s > moment) - 1))

    def push(at: float, kind: str, loop: int, ticket: Ticket | None = None, code: int = 0) -> None:
        heapq.heappush(events, (at, next(order), kind, loop, ticket, code))

    for loop in range(loops):
        push(0.0, "task", loop)
    while events:
        at, _, kind, loop, ticket, code = heapq.heappop(events)
        if at >= end:
            break
        clock.now = at
        index = phase_at(at)
        while current < index:
            current += 1
            rate = phases[current].requests_per_s
            bucket.retune(rate, burst_s=1.0, now=starts[current])
        bucket.advance(at)
        phase, count = phases[index], counts[index]
        if kind == "task":
            state[loop] = [0, index]
            counts[index].tasks += 1
            push(at, "poll", loop, ctl.request())
        elif kind == "poll" and ticket is not None:
            wait = ctl.poll(ticket)
            if wait > 0:
                push(at + (_SLOT_POLL_S if math.isinf(wait) else wait), "poll", loop, ticket)
                continue
            state[loop][0] += 1
            count.attempts += 1
            count.early += at < retry_deadline
            while serving and serving[0] <= at:
                heapq.heappop(serving)
            if bucket.wait_for(1) > 0:
                count.rate_limited += 1
                wait_s = bucket.wait_for(1)
                retry_deadline = max(retry_deadline, at + math.ceil(wait_s * 1000) / 1000)
                push(at + _REFUSAL_RTT_S, "done", loop, ticket, 429)
                continue
            if rng.random() < phase.error_rate:
                count.errors += 1
                push(at + phase.rtt_s / 4, "done", loop, ticket, 500)
                continue
            bucket.take(1)
            begin = at
            cap = phase.max_concurrency
            if cap is not None and len(serving) >= cap:
                begin = heapq.nsmallest(len(serving) - cap + 1, serving)[-1]
            heapq.heappush(serving, begin + phase.rtt_s)
            push(begin + phase.rtt_s, "done", loop, ticket, 200)
        elif kind == "done" and ticket is not None:
            if code == 200:
                ctl.release(ticket, headers=headers(phase))
                sent_in = phase_at(ticket.sent_at or at)
                counts[sent_in].ok += 1
                for offset in after_s:
                    if ticket.sent_at is not None and ticket.sent_at >= starts[sent_in] + offset:
                        got = counts[sent_in].ok_after
                        got[offset] = got.get(offset, 0) + 1
                push(at, "task", loop)
                continue
            error = rate_limit_error(retry_deadline - at) if code == 429 else server_error()
            ctl.release(ticket, error=error)
            used, task_phase = state[loop]
            if used >= attempts:
                counts[task_phase].tasks_failed += 1
                push(at, "task", loop)
            else:
                push(at, "poll", loop, ctl.request())
    return LoadResult(phases=phases, counts=counts)
