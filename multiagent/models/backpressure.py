"""The adaptive backpressure controller: how many requests, how fast, and when to hold off.

Three bounds apply to every request sent to one (provider, model):

1. **Concurrency**: at most ``limit`` requests hold a slot (scheduled or in flight).
2. **Pace**: sends are spaced ``multiplier / rate`` seconds apart and by their estimated tokens
   (prompt + max output) against tokens/s: a GCRA schedule, so waiting requests keep their
   order and wake once. An idle controller lets ``burst_s`` worth go at once (never right after
   a cut or a pause); a request the server failed (5xx) gives its place back.
3. **Pause**: after a 429, nothing leaves before its ``Retry-After`` / ``retry-after-ms`` /
   ``x-ratelimit-reset-*`` expires, whichever agent or model sends it (:class:`ProviderGate`).

What was studied, what was chosen, and why:

- *Vegas and Gradient2* (Netflix concurrency-limits) infer a queue from RTT drift against a
  no-load baseline. An LLM call's RTT is mostly generation time, 10x apart between short and
  long answers, and providers that rate-limit answer a refusal at once instead of queueing; so
  RTT drift would cut on long answers and miss the 429s. Not chosen for the pace. Their idea
  serves the concurrency limit once the RTT is divided by the answer's output tokens
  (``release(output_tokens=...)``): seconds per token hardly depend on the answer's length, so
  a rise against the model's own usual figure is a queue (:func:`~multiagent.models._bp_health.
  read_health`), however slow the model is; the absolute ``rtt_threshold_s`` only applies to
  callers that report no tokens. Like Vegas's base RTT, that usual figure is only as good as
  the least-queued answer seen: until one answer ran alone, a full limit is not grown but
  drained to take one (BBR's ProbeRTT; :func:`~multiagent.models._bp_health.settled_limit`).
  The RTT also sizes, through Little's law, the concurrency the pace needs (below).
- *TCP BBR* estimates bottleneck bandwidth from delivery-rate samples and probes above it in
  cycles (ProbeBW gains 1.25 / 0.75 / 1, then cruising). Its lesson taken here: measure the
  capacity where the bottleneck is known to be full. A provider's token bucket hides an
  overshoot in its burst, so delivery while nothing is refused proves nothing (BBR's delivery
  rate would read the burst as bandwidth); but a refusal means its bucket was empty, so what
  it admitted between two refusals is its capacity, within one request, however fast we sent
  and however long apart they are (:mod:`multiagent.models._pace`: the pace then settles at
  ``settle`` × it; a refusal while cruising at a measured capacity means it fell, and cuts to
  ``drop_backoff`` × the delivered rate, below it, so that the next refusal, where the pace
  meets it again, is both the only other 429 and an exact measurement). BBR's cwnd = gain ×
  bandwidth × RTprop becomes the concurrency floor: ``concurrency_gain`` × pace × RTT p95, so a
  profile's count of slots never starves a pace that found more capacity (up to
  ``concurrency_cap``); a provider that queues past its slots holds requests in their slots,
  where the pace does not grow, and its rising seconds per output token cut the limit.
- *Probing* is convex growth per tick (CUBIC, BBR's startup) after ``probe_wait`` of cruising,
  only while the pace is what holds requests back. Blind, a probe that finds the ceiling where
  it was costs one 429, and no probe can tell a raise without risking one: a fixed period
  costs 1 / (capacity × period), 4% at 8 req/s every 3 s. So the wait doubles after each probe
  that finds the same ceiling, up to ``1 / (probe_share × capacity)`` (1% of attempts: 12.5 s at
  8 req/s, 5 s at 20), and falls back to ``hold_s`` when a probe or a measurement finds more,
  or when the median round trip moves by ``rtt_shift`` (the provider's load changed; BBR
  re-probes on path changes, Vegas reads them as a new base RTT). The price: a raise with no
  such sign is found up to that longest wait late. BBR's gain cycle (probe, then drain below
  the estimate) was not taken: against a token bucket the drain refills the burst that then
  hides the next probe.
- *AIMD* on concurrency (Netflix's ``AIMDLimit``): a server-error rate surely above the
  profile's threshold (three standard deviations, so 5% of errors never pass 10% by chance) or
  seconds per output token above ``latency_rise`` × the model's usual figure (the limit then
  falls by that factor at once) cuts ``limit`` and stretches waits; a healthy window
  decays the stretch and adds one to a limit that was reached. Server errors never cut the pace.
- Providers that *advertise* their limits (``x-ratelimit-limit-requests`` / ``-tokens``, as
  OpenAI) set the ceiling to ``headroom`` of the advertised limit, and a change of it moves the
  pace by the same ratio at once; after a raise, what the provider's bucket gathered while we
  learned of it (a round trip) is sent at once. The profile's ``requests_per_minute`` is where
  the pace starts, not a ceiling (``max_requests_per_s`` is one, when set).

Every decision reads an injected clock, so tests drive the controller with a fake clock and
scripted outcomes through :meth:`BackpressureController.request` / ``poll`` / ``release``;
:meth:`acquire` and :meth:`aacquire` are the blocking and async loops over the same calls.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Callable, Mapping

from multiagent._metrics import Sample
from multiagent.models._bp_health import (
    TickFlags,
    TokenLatency,
    fit_limit,
    gauge_samples,
    judged_latency,
    read_health,
    settled_limit,
)
from multiagent.models._bp_types import (
    BackpressureConfig,
    BackpressureState,
    Ticket,
    concurrency_refusal,
    kind_of,
)
from multiagent.models._bp_wait import Waiting
from multiagent.models._gate import ProviderGate
from multiagent.models._pace import Pace
from multiagent.models._window import Outcome, OutcomeWindow
from multiagent.models.provider_errors import advertised_limits, headers_of, retry_after_s

#: Slots closer than this are due now (float sums of intervals drift by far less).
_EPSILON_S = 1e-6


class BackpressureController(Waiting):
    """Adaptive concurrency, pace and pause for one (provider, model); thread- and task-safe."""

    def __init__(
        self,
        config: BackpressureConfig | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        gate: ProviderGate | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> None:
        self.config = cfg = config or BackpressureConfig()
        self.labels = dict(labels or {})
        self._clock = clock
        self.gate = gate or ProviderGate(clock=clock)
        self._lock = threading.Lock()
        self._slot_freed = threading.Condition(self._lock)
        self._rebooked = threading.Condition(self._lock)
        self._slot_waiters: set[asyncio.Future[None]] = set()
        self._pace_waiters: set[asyncio.Future[None]] = set()
        self._window = OutcomeWindow(span_s=cfg.window_s, memory_s=cfg.measure_s)
        self._latency = TokenLatency()
        self.limit = float(cfg.max_concurrency)
        self.pace = Pace(cfg, now=clock())
        self.tokens_ceiling = cfg.tokens_per_s
        self.multiplier = 1.0
        self.advertised_rps: float | None = None
        self.advertised_tps: float | None = None
        self.limit_cuts = 0
        self._holders = self._sent = 0
        self._last_send = -math.inf
        self._tat = self._tat_tokens = -math.inf
        self._epoch = 0
        self._start = clock()
        self._last_limit_cut = -math.inf
        self._last_tick = self._start
        self._flags = TickFlags()

    @property
    def rate(self) -> float:
        """The pace in requests per second."""
        return self.pace.rate

    @property
    def ceiling(self) -> float:
        """The highest pace allowed (configured or advertised; infinite when neither)."""
        return self.pace.ceiling

    @property
    def rate_cuts(self) -> int:
        """How often a 429 cut the pace."""
        return self.pace.cuts

    # -- the decisions ---------------------------------------------------------------------

    def request(self, *, tokens: int = 0) -> Ticket:
        """Register a request of about ``tokens`` tokens; :meth:`poll` it until it may go."""
        return Ticket(tokens=max(0, tokens))

    def poll(self, ticket: Ticket) -> float:
        """Return 0 when ``ticket`` may be sent now (it is then in flight), else seconds to wait.

        ``math.inf`` means: wait until another request is released (the concurrency limit).
        """
        with self._lock:
            return self._poll(ticket)

    def _poll(self, ticket: Ticket) -> float:
        now = self._clock()
        if self._maybe_tick(now):
            self._notify(rebooked=True)
        if not ticket.holds_slot:
            if self._holders >= max(1, math.floor(self.limit)):
                self._flags.saturated = True
                return math.inf
            ticket.holds_slot = True
            self._holders += 1
            self._flags.reached |= self._holders >= math.floor(self.limit)
        gate_until = self.gate.until
        if ticket.slot_at is None or ticket.epoch != self._epoch:
            ticket.slot_at = self._reserve(ticket.tokens, max(now, gate_until))
            ticket.epoch = self._epoch
        if gate_until > ticket.slot_at:  # a pause began after the slot was booked
            ticket.slot_at = None
            return gate_until - now
        if ticket.slot_at > now + _EPSILON_S:
            self._flags.pace_bound = True
            return ticket.slot_at - now
        ticket.sent_at = self._last_send = now
        self._window.sent(now)
        self._latency.sent(ticket, others_out=self._sent > 0)
        self._sent += 1
        return 0.0

    def _reserve(self, tokens: int, earliest: float) -> float:
        # GCRA: a slot may be up to ``burst_s`` ahead of the theoretical arrival time, so an
        # idle controller lets a short burst through and a busy one spaces every send
        burst = self.config.burst_s
        slot = max(earliest, self._tat - burst)
        tps = self._tokens_per_s()
        if tps is not None and tokens:
            slot = max(slot, self._tat_tokens - burst)
            self._tat_tokens = max(self._tat_tokens, slot) + self.multiplier * tokens / tps
        self._tat = max(self._tat, slot) + self.multiplier / self.rate
        return slot

    def _tokens_per_s(self) -> float | None:
        known = [v for v in (self.tokens_ceiling, self._advertised_tokens()) if v is not None]
        return min(known) if known else None

    def _advertised_tokens(self) -> float | None:
        if self.advertised_tps is None:
            return None
        return self.advertised_tps * self.config.headroom

    def cancel(self, ticket: Ticket) -> None:
        """Give up ``ticket`` without an outcome (the caller was cancelled)."""
        with self._lock:
            self._free(ticket)

    def release(
        self,
        ticket: Ticket,
        *,
        error: BaseException | None = None,
        headers: Mapping[str, str] | None = None,
        output_tokens: int | None = None,
        served_s: float | None = None,
    ) -> None:
        """Record how a sent request ended and adapt.

        Args:
            ticket: The ticket :meth:`poll` let through.
            error: The exception it failed with; ``None`` for an answer.
            headers: Response headers of an answer (an error's are read from ``error``).
            output_tokens: Tokens the answer held; given, latency is judged per output token
                against the model's own usual figure (else by ``rtt_threshold_s``).
            served_s: The server's own time for a whole answer, when it said; latency is then
                judged on it instead of the round trip (see
                :func:`~multiagent.models._bp_health.served_seconds`).
        """
        with self._lock:
            now = self._clock()
            epoch = self._epoch
            sent_at = ticket.sent_at if ticket.sent_at is not None else now
            kind = kind_of(error)
            took = judged_latency(kind, now - sent_at, served_s)
            self._window.add(Outcome(at=now, rtt_s=took, kind=kind))
            if kind == "ok" and output_tokens is not None:
                self._latency.add(
                    sent_at=sent_at, rtt_s=took, output_tokens=output_tokens,
                    alone=self._latency.ran_alone(ticket),
                )  # fmt: skip
            seen = headers if headers is not None else headers_of(error) if error else None
            if seen is not None and self.config.use_limit_headers:
                self._learn_limits(seen, now, rtt=now - sent_at)
            if kind == "rate_limit" and error is not None:
                self._on_rate_limited(error, sent_at, now, seen)
            elif kind == "error" and ticket.epoch == self._epoch and self._tat > now:
                # a failed request did no work: give its place in the pace back (were the
                # provider to count it against the limit anyway, its 429s would cut the rate)
                self._tat -= self.multiplier / self.rate
            self._free(ticket)
            self._maybe_tick(now)
            if self._epoch != epoch:
                self._notify(rebooked=True)

    def _free(self, ticket: Ticket) -> None:
        if ticket.done:
            return
        ticket.done = True
        if ticket.holds_slot:
            self._holders -= 1
            self._notify(rebooked=False)
        if ticket.sent_at is not None:
            self._sent -= 1

    def _learn_limits(self, headers: Mapping[str, str], now: float, *, rtt: float) -> None:
        rps, tps = advertised_limits(headers)
        if tps is not None:
            self.advertised_tps = tps
        if rps is None or rps == self.advertised_rps:
            return
        previous, self.advertised_rps = self.advertised_rps, rps
        before = self.rate
        self.pace.advertised(rps, previous)
        self._rate_moved(before)
        if previous is not None and rps > previous:
            self._catch_up((rps - previous) * self.config.headroom, now, rtt=rtt)

    def _catch_up(self, gained_rps: float, now: float, *, rtt: float) -> None:
        """Spend at once what a raised limit left unused while we learned of it.

        The raise shows in the headers of a request admitted after it, so we learn of it at
        least that request's round trip late; meanwhile the provider's bucket filled by the
        difference at least that long.
        """
        interval = self.multiplier / self.rate
        extra = min(gained_rps * rtt, self.config.burst_s / interval)
        self._tat = min(
            self._tat, max(now, self.gate.until) + self.config.burst_s - extra * interval
        )

    def _on_rate_limited(
        self, error: BaseException, sent_at: float, now: float, headers: Mapping[str, str] | None
    ) -> None:
        self._flags.rate_limited = True
        wait = retry_after_s(error)
        if wait is not None and self.gate.pause(wait):
            resume = self.gate.until + self.config.burst_s
            self._tat, self._tat_tokens = max(self._tat, resume), max(self._tat_tokens, resume)
        if concurrency_refusal(headers):
            if sent_at > self._last_limit_cut:
                self._cut_limit(now)
            return
        before = self.rate
        if self.pace.on_rate_limited(sent_at=sent_at, now=now, window=self._window):
            self._rate_moved(before, unpaused=wait is None)

    def _rate_moved(self, before: float, *, unpaused: bool = False) -> None:
        """Void booked slots when the pace fell, or rose by more than a tenth.

        A 429 that named no pause (``unpaused``) gets none: the new pace's first slot is then
        one interval of it after the last send (see :meth:`_rebook`).
        """
        if self.rate < before or self.rate > before * 1.1:
            self._rebook(spaced=unpaused)

    def _rebook(self, *, spaced: bool = False) -> None:
        """Make every booked slot void (they were spaced for another pace); no burst credit.

        ``spaced``: the first slot of the new pace is one interval of it after the last send.
        A 429 with no Retry-After (a gateway's ``limit_req`` answers so, at once) pauses
        nothing: with a first slot at once, each refusal cut the pace, rebooked and let the
        next waiting request go, and the waiting requests went back to back into a wall of
        429s that drove the pace to its floor.
        """
        self._epoch += 1
        after = self._last_send + self.multiplier / self.rate if spaced else -math.inf
        start = max(self._clock(), self.gate.until, after) + self.config.burst_s
        self._tat = self._tat_tokens = start

    def _cut_limit(self, now: float, *, scale: float | None = None) -> None:
        factor = self.config.limit_backoff if scale is None else scale
        self.limit = max(float(self.config.min_concurrency), self.limit * factor)
        self._last_limit_cut = now
        self.limit_cuts += 1

    def _maybe_tick(self, now: float) -> bool:
        """Evaluate the window every ``tick_s``; return whether booked slots were voided."""
        cfg = self.config
        if now - self._last_tick < cfg.tick_s:
            return False
        self._last_tick = now
        epoch = self._epoch
        flags, self._flags = self._flags, TickFlags()
        health = read_health(self._window, self._latency, cfg, now=now)
        p95 = self._window.rtt(now, 0.95)
        if health.unhealthy:
            if now - self._last_limit_cut >= cfg.window_s / 2:
                self._cut_limit(now, scale=health.scale)
                self._latency.judged(at=now)
                self.multiplier = min(cfg.max_wait_multiplier, self.multiplier * 1.5)
                self._rebook()
            return self._epoch != epoch
        self.multiplier = max(1.0, self.multiplier / 1.25)
        grown = fit_limit(
            self.limit,
            self.config,
            rate=self.rate,
            # no Little's-law floor while requests queue: their round trips are the queue's
            rtt_s=p95 if health.may_grow else math.nan,
            saturated=flags.saturated and health.may_grow,
            by_latency=self._latency.known,
        )
        self.limit = settled_limit(
            self.limit, grown, self._latency, cfg, now=now, reached=flags.reached or flags.saturated
        )
        self.pace.note_rtt(self._window.recent_rtt(), now)
        if flags.pace_bound and not flags.rate_limited and now >= self.gate.until:
            before = self.rate
            if self.pace.grow(now, self._window):
                self._rate_moved(before)
        return self._epoch != epoch

    # -- reading -----------------------------------------------------------------------------

    def paused_for(self) -> float:
        """Seconds left of the pause a ``Retry-After`` imposed on this controller's endpoint
        (0 when open): a chain asks it to route around a paused primary (see
        :mod:`multiagent.models._chain_call`)."""
        return self.gate.remaining()

    def state(self) -> BackpressureState:
        """The controller's current state."""
        with self._lock:
            now = self._clock()
            error_rate, samples = self._window.error_rate(now)
            p50, p95 = self._window.rtt(now, 0.5), self._window.rtt(now, 0.95)
            return BackpressureState(
                limit=max(1, math.floor(self.limit)),
                in_flight=self._sent,
                queued=self._holders - self._sent,
                rate_per_s=self.rate,
                ceiling_per_s=self.ceiling,
                wait_multiplier=self.multiplier,
                error_rate=error_rate,
                samples=samples,
                rtt_p50_s=None if math.isnan(p50) else p50,
                rtt_p95_s=None if math.isnan(p95) else p95,
                paused_for_s=self.gate.remaining(),
                time_paused_s=self.gate.time_paused(),
                advertised_requests_per_s=self.advertised_rps,
                rate_cuts=self.rate_cuts,
                limit_cuts=self.limit_cuts,
            )

    def samples(self) -> list[Sample]:
        """Gauge samples (``backpressure_*``) for the metrics store."""
        return gauge_samples(self.state(), self.labels)


__all__ = [
    "BackpressureConfig",
    "BackpressureController",
    "BackpressureState",
    "ProviderGate",
    "Ticket",
]
