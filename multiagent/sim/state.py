"""The simulator's decisions: admit a request, refuse it with a 429, or fail it with a 5xx.

All state lives in one :class:`SimState` driven from the server's event loop (one thread), so it
needs no locks. Limits are shared by every caller, like an API key's: the latest Retry-After
deadline handed to anyone makes every request that arrives before it an ``early`` one. With
``event_log`` on, each Retry-After and early arrival is also kept as a :class:`SimEvent` naming
the request (its ``x-request-id``).
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from multiagent.sim.config import SimServerConfig
from multiagent.sim.limits import TokenBucket, ratelimit_headers, retry_headers
from multiagent.sim.schedule import PhaseClock
from multiagent.sim.stats import Counts, SimEvent, rates

Limit = Literal["requests", "tokens", "concurrency"]
#: The request header whose value names a request in the event log.
REQUEST_ID_HEADER = "x-request-id"
_MIN_CONCURRENCY_WAIT_S = 0.01


@dataclass(frozen=True)
class Admitted:
    """A request let through: its latency and the headers its response carries."""

    ticket: int
    generation: int
    phase: int
    ttft_s: float
    token_latency_s: float
    headers: dict[str, str]


@dataclass(frozen=True)
class Refused:
    """A request answered with an error: 429 (``limit`` says which) or an injected 5xx."""

    status: int
    phase: int
    message: str
    headers: dict[str, str]
    limit: Limit | None = None


class SimState:
    """Limits, schedule, fault draws and statistics of one simulator."""

    def __init__(
        self,
        config: SimServerConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        """Start the schedule now; ``clock`` is monotonic, ``wall`` gives epoch seconds."""
        self.config = config
        self.phases = config.resolved_phases()
        self._clock = clock
        self._wall = wall
        self._in_flight: dict[int, float] = {}  # ticket -> planned end, survives resets
        self._tickets = 0
        self.generation = 0
        self.reset()

    def reset(self) -> None:
        """Clear statistics, refill the buckets, restart the schedule and the fault draws."""
        now = self._clock()
        self.generation += 1
        self.schedule = PhaseClock(self.phases, start=now)
        self._wall_start = self._wall()
        self._phase = 0
        first, burst = self.phases[0], self.config.burst_s
        self.requests = TokenBucket.full(first.rpm / 60.0, burst_s=burst, now=now)
        self.tokens = TokenBucket.full(first.tpm / 60.0, burst_s=burst, now=now)
        self.counts = [Counts() for _ in self.phases]
        self.retry_deadline = -math.inf
        self._rng = random.Random(self.config.seed)
        self._events: list[SimEvent] = []

    def _advance(self, now: float) -> int:
        """Move to the phase in force at ``now``, retuning the buckets at each boundary."""
        target = self.schedule.index_at(now)
        burst = self.config.burst_s
        while self._phase < target:
            self._phase += 1
            boundary, phase = self.schedule.start_of(self._phase), self.phases[self._phase]
            self.requests.retune(phase.rpm / 60.0, burst_s=burst, now=boundary)
            self.tokens.retune(phase.tpm / 60.0, burst_s=burst, now=boundary)
        self.requests.advance(now)
        self.tokens.advance(now)
        return self._phase

    def _wall_at(self, moment: float) -> float:
        """``moment`` (monotonic clock) in epoch seconds."""
        return self._wall_start + (moment - self.schedule.start)

    def _log(
        self,
        kind: Literal["retry_after", "early"],
        request_id: str | None,
        *,
        now: float,
        deadline: float,
    ) -> None:
        """Keep an event when the log is on."""
        if self.config.event_log:
            event = SimEvent(kind, request_id, self._wall_at(now), self._wall_at(deadline))
            self._events.append(event)

    def events(self) -> list[SimEvent]:
        """The event log since the last reset (empty unless ``event_log`` is on)."""
        return list(self._events)

    def _limit_headers(self, index: int) -> dict[str, str]:
        if not self.config.limit_headers:
            return {}
        phase = self.phases[index]
        return ratelimit_headers(
            rpm=phase.rpm, tpm=phase.tpm, requests=self.requests, tokens=self.tokens
        )

    def admit(
        self, *, cost_tokens: int, pieces: int, request_id: str | None = None
    ) -> Admitted | Refused:
        """Decide on a request that arrives now.

        Args:
            cost_tokens: What it counts against tokens/min: prompt tokens + max output tokens.
            pieces: Streaming pieces of its reply, to plan when it will finish.
            request_id: What names the request in the event log.
        """
        now = self._clock()
        index = self._advance(now)
        phase, counts = self.phases[index], self.counts[index]
        counts.attempts += 1
        if now < self.retry_deadline:
            counts.early += 1
            self._log("early", request_id, now=now, deadline=self.retry_deadline)
        if cost_tokens > phase.tpm:
            # as OpenAI: more than a minute's tokens never fits; admitted, its debt to the
            # bucket would refuse everyone for cost/tpm minutes (max_tokens=10**9: 16 hours)
            counts.rate_limited += 1
            counts.rejected_tokens += 1
            message = (
                f"Request too large (simulated) on tokens per min (TPM): Limit {phase.tpm:.15g}, "
                f"Requested {cost_tokens}. The input or output tokens must be reduced in order "
                "to run successfully."
            )
            headers = self._limit_headers(index)
            return Refused(429, index, message, headers, limit="tokens")
        waits: dict[Limit, float] = {}
        if (wait := self.requests.wait_for(1)) > 0:
            waits["requests"] = wait
        if (wait := self.tokens.wait_for(cost_tokens)) > 0:
            waits["tokens"] = wait
        if len(self._in_flight) >= phase.max_concurrency:
            soonest = min(self._in_flight.values())
            waits["concurrency"] = max(soonest - now, _MIN_CONCURRENCY_WAIT_S)
        if waits:
            return self._refuse(index, now, waits, cost_tokens, request_id)
        if phase.error_rate and self._rng.random() < phase.error_rate:
            counts.server_errors += 1
            status = self._rng.choice((500, 503))
            message = (
                "The server had an error while processing your request. Sorry about that!"
                if status == 500
                else "The engine is currently overloaded, please try again later."
            )
            return Refused(status=status, phase=index, message=message, headers={})
        self.requests.take(1)
        self.tokens.take(cost_tokens)
        ttft = phase.ttft_s
        if phase.spike_rate and self._rng.random() < phase.spike_rate:
            counts.latency_spikes += 1
            ttft += self.config.spike_s
        self._tickets += 1
        self._in_flight[self._tickets] = now + ttft + pieces * phase.token_latency_s
        return Admitted(
            ticket=self._tickets,
            generation=self.generation,
            phase=index,
            ttft_s=ttft,
            token_latency_s=phase.token_latency_s,
            headers=self._limit_headers(index),
        )

    def _refuse(
        self,
        index: int,
        now: float,
        waits: dict[Limit, float],
        cost_tokens: int,
        request_id: str | None,
    ) -> Refused:
        counts, phase = self.counts[index], self.phases[index]
        counts.rate_limited += 1
        counts.rejected_requests += "requests" in waits
        counts.rejected_tokens += "tokens" in waits
        counts.rejected_concurrency += "concurrency" in waits
        limit = max(waits, key=lambda name: waits[name])
        retry = retry_headers(waits[limit])
        deadline = now + int(retry["retry-after-ms"]) / 1000
        self.retry_deadline = max(self.retry_deadline, deadline)
        self._log("retry_after", request_id, now=now, deadline=deadline)
        wait_text = f"{int(retry['retry-after-ms']) / 1000:.3f}".rstrip("0").rstrip(".") + "s"
        if limit == "requests":
            detail = f"requests per min (RPM): Limit {phase.rpm:.15g}, Requested 1"
        elif limit == "tokens":
            detail = f"tokens per min (TPM): Limit {phase.tpm:.15g}, Requested {cost_tokens}"
        else:
            detail = f"concurrent requests: Limit {phase.max_concurrency}"
        message = f"Rate limit reached (simulated) on {detail}. Please try again in {wait_text}."
        headers = {**retry, **self._limit_headers(index)}
        return Refused(status=429, phase=index, message=message, headers=headers, limit=limit)

    def finish(
        self, admitted: Admitted, *, completed: bool, prompt_tokens: int, completion_tokens: int
    ) -> None:
        """Record the end of an admitted request (``completed`` False: the client left)."""
        self._in_flight.pop(admitted.ticket, None)
        if admitted.generation != self.generation:
            return  # it began before a reset; the new statistics never saw it
        counts = self.counts[admitted.phase]
        if completed:
            counts.successes += 1
            counts.prompt_tokens += prompt_tokens
            counts.completion_tokens += completion_tokens
        else:
            counts.aborted += 1

    def snapshot(self) -> dict[str, Any]:
        """Totals and per-phase counters, each phase with its capacity and actual times."""
        now = self._clock()
        current = self._advance(now)
        start = self.schedule.start
        wall = self._wall_at
        total = Counts()
        phases = []
        for index, phase in enumerate(self.phases):
            counts = self.counts[index]
            total.add(counts)
            begins, ends = self.schedule.start_of(index), self.schedule.end_of(index)
            started, ended = now >= begins, ends is not None and now >= ends
            elapsed = max(0.0, min(now, ends if ends is not None else now) - begins)
            phases.append(
                {
                    "index": index,
                    "name": phase.name,
                    "state": "done" if ended else "active" if started else "pending",
                    "start_s": begins - start,
                    "end_s": None if ends is None else ends - start,
                    "started_at": wall(begins) if started else None,
                    "ended_at": wall(ends) if ended and ends is not None else None,
                    "elapsed_s": elapsed,
                    "capacity": {
                        **phase.model_dump(),
                        "requests_per_s": phase.requests_per_s,
                        "tokens_per_s": phase.tokens_per_s,
                        "burst_requests": max(1.0, phase.requests_per_s * self.config.burst_s),
                        "burst_tokens": max(1.0, phase.tokens_per_s * self.config.burst_s),
                    },
                    "counts": counts.as_dict(),
                    **rates(counts, seconds=elapsed, requests_per_s=phase.requests_per_s),
                }
            )
        return {
            "started_at": self._wall_start,
            "uptime_s": now - start,
            "current_phase": self.phases[current].name,
            "in_flight": len(self._in_flight),
            "retry_deadline_in_s": max(0.0, self.retry_deadline - now),
            "capacity_model": (
                "token buckets refilled continuously at rpm/60 requests and tpm/60 tokens per "
                f"second, holding {self.config.burst_s:g} s of each; a request costs 1 request "
                f"and prompt + max output tokens (default {self.config.default_max_tokens})"
            ),
            "totals": total.as_dict(),
            "phases": phases,
        }
