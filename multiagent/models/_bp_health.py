"""What a controller's tick reads from its window: health, and how many slots the pace needs.

Health is read from server errors (a share surely above the profile's threshold) and from
latency *per output token*, relative to the model's own usual figure (:class:`TokenLatency`):
a call's round trip is mostly generation time, so a small local model writing 40 tokens/s
takes seconds per call and is not overloaded, while the same model queueing requests behind
each other (a server that serves one at a time) takes several times its usual seconds per
token. Only when callers report no output tokens does the absolute ``rtt_threshold_s`` apply.
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from langchain_core.messages import BaseMessage

from multiagent._metrics import Sample
from multiagent.models._bp_types import BackpressureConfig, BackpressureState
from multiagent.models._window import OutcomeWindow

#: A rise still this share of the one a cut answered means the cut did not help.
_STILL = 0.75

_GAUGES = (
    "limit",
    "in_flight",
    "queued",
    "rate_per_s",
    "wait_multiplier",
    "error_rate",
    "rtt_p50_s",
    "rtt_p95_s",
    "paused_for_s",
    "time_paused_s",
)


@dataclass
class TickFlags:
    """What happened since the last tick."""

    saturated: bool = False
    pace_bound: bool = False
    rate_limited: bool = False


class TokenLatency:
    """Seconds per output token of a model's answers: the recent ones against its usual figure.

    The usual figure is the lowest of the last ``history`` answers (Vegas's base RTT, per
    token): what the model takes when nothing waits ahead of its requests; a quantile would
    drift up while a queue persists, and a model cannot answer faster than it writes. The
    recent figure is the median of the last ``recent`` answers *sent* after the last change of
    the limit (a cut or a growth: :meth:`judged`), so one long prompt does not read as a queue,
    and a change is judged on requests that met it (TCP Vegas adjusts once per round trip for
    that reason).
    """

    def __init__(self, *, recent: int = 8, history: int = 128) -> None:
        self._recent: deque[float] = deque(maxlen=recent)
        self._history: deque[float] = deque(maxlen=history)
        self._since = -math.inf
        self._cut_for = math.nan  # the rise a cut of the limit answered, until judged again
        self._round_trips: deque[float] = deque(maxlen=recent)
        self._backlog: deque[float] = deque(maxlen=recent)  # sent before a cut, answered after
        #: the rise whose cut the last judgement found useless (to undo; NaN: none)
        self.undo = math.nan

    @property
    def known(self) -> bool:
        """Whether any answer reported its output tokens (then latency is judged per token)."""
        return bool(self._history)

    def add(self, *, sent_at: float, rtt_s: float, output_tokens: int) -> None:
        """Record an answer of ``output_tokens`` tokens sent at ``sent_at``, ``rtt_s`` long."""
        per_token = max(rtt_s, 0.0) / max(1, output_tokens)
        self._round_trips.append(max(rtt_s, 0.0))
        if sent_at >= self._since:
            self._recent.append(per_token)
        elif not math.isnan(self._cut_for):
            self._backlog.append(per_token)
        self._history.append(per_token)

    def rise(self, *, min_samples: int) -> float:
        """Recent seconds per token over the usual ones; NaN with fewer than ``min_samples``."""
        # after a cut, two answers tell whether it helped: at a cut limit answers come slowly
        need = min(2, min_samples) if not math.isnan(self._cut_for) else min_samples
        if len(self._recent) < max(1, need):
            return math.nan
        usual = min(self._history)
        recent = statistics.median(self._recent)
        rise = recent / usual if usual > 0 else math.nan
        cut_for, self._cut_for = self._cut_for, math.nan
        before = statistics.median(self._backlog) / usual if self._backlog else cut_for
        self._backlog.clear()
        if rise >= _STILL * before:
            # a cut of the limit to what a queue would let through left seconds per token
            # where they were (against answers sent just before it: a queue's backlog): no
            # queue, the model got slower (BBR's ProbeRTT: a round trip that stays long with
            # little in flight is the new floor); it becomes the usual figure
            self._history.clear()
            self._history.extend(self._recent)
            self.undo = cut_for
            return 1.0
        return rise

    def judged(self, *, at: float, cut_for: float = math.nan) -> None:
        """The limit changed at ``at``: the next judgement reads answers sent from then on.

        ``cut_for``: the limit was cut for this rise; if the next judgement finds about the
        same rise, the cut did not help and the recent figure becomes the usual one. That
        judgement reads answers sent a round trip after the cut: a queue's backlog, sent
        before it, has drained by then, and what was sent after no longer waits behind it.
        """
        self._recent.clear()
        drain = max(self._round_trips, default=0.0) if not math.isnan(cut_for) else 0.0
        self._since = at + drain
        self._cut_for = cut_for


def output_tokens_of(messages: Sequence[BaseMessage]) -> int | None:
    """Output tokens of an answer (one message, or a stream's chunks); ``None`` when empty.

    The usage the provider reported, else one per chunk that carried anything (a streamed
    chunk is about one token; servers that stream send no usage).
    """
    reported = [getattr(m, "usage_metadata", None) for m in messages]
    counted = [int(u["output_tokens"]) for u in reported if u and u.get("output_tokens")]
    if counted:
        return sum(counted)
    pieces = sum(1 for m in messages if m.content or getattr(m, "tool_call_chunks", None))
    return pieces or None


@dataclass(frozen=True)
class Health:
    """A tick's reading: whether to cut the concurrency limit (by which factor), or whether it
    may grow; ``rise``: the rise of seconds per token that made it unhealthy (NaN otherwise);
    ``restore``: the factor that undoes a cut which did not bring seconds per token down."""

    unhealthy: bool
    scale: float = 1.0
    may_grow: bool = True
    rise: float = math.nan
    restore: float = 1.0


def read_health(
    window: OutcomeWindow, latency: TokenLatency, config: BackpressureConfig, *, now: float
) -> Health:
    """Health of the provider from the outcome window and the per-token latency.

    A rise of latency per token by ``r`` (above ``latency_rise``) means requests wait about
    ``r`` times as long as the model needs: by Little's law the model serves about ``1 / r``
    of what is in flight, so the limit is scaled by ``1 / r`` (at most ``limit_backoff``), at
    once, instead of the several halvings an absolute threshold would take. The limit grows
    only while seconds per token stay within half of that rise (Vegas's band between its
    thresholds: hold), and not before answers sent after the last change were read; nor does
    Little's-law floor (:func:`fit_limit`) raise it then, as queued round trips would size it.
    """
    error_rate, samples = window.error_rate(now)
    enough = samples >= config.min_samples
    if enough and surely_above(error_rate, samples, config.error_rate_threshold):
        return Health(unhealthy=True, scale=config.limit_backoff)
    if latency.known:
        rise = latency.rise(min_samples=config.latency_samples)
        if rise != rise:
            return Health(unhealthy=False, may_grow=False)
        undo, latency.undo = latency.undo, math.nan
        if not math.isnan(undo):  # the last cut did not help: give back what it took
            return Health(unhealthy=False, restore=1.0 / min(config.limit_backoff, 1.0 / undo))
        if rise > config.latency_rise:
            return Health(unhealthy=True, scale=min(config.limit_backoff, 1.0 / rise), rise=rise)
        return Health(unhealthy=False, may_grow=rise <= (1.0 + config.latency_rise) / 2)
    p95 = window.rtt(now, 0.95)
    slow = enough and p95 == p95 and p95 > config.rtt_threshold_s
    return Health(unhealthy=slow, scale=config.limit_backoff)


def surely_above(share: float, samples: int, threshold: float) -> bool:
    """Whether ``share`` of ``samples`` is above ``threshold`` by more than chance.

    More than three standard deviations of a binomial count at the threshold: 5% of errors then
    do not pass a 10% threshold by a lucky cluster (3 of 20 would, one tick in thirteen), while
    a real 30% does.
    """
    expected = samples * threshold
    spread = 3.0 * math.sqrt(samples * threshold * (1.0 - threshold))
    return share * samples > expected + spread


def fit_limit(
    limit: float,
    config: BackpressureConfig,
    *,
    rate: float,
    rtt_s: float,
    saturated: bool,
    by_latency: bool = False,
) -> float:
    """The concurrency limit after a healthy tick.

    One more when it was reached (AIMD's additive step). By Little's law the pace needs
    ``rate × round trip`` requests in flight (the p95 round trip, so a slower provider is met
    at once); past ``max_concurrency`` the limit follows ``concurrency_gain`` times that (BBR's
    cwnd gain), up to ``concurrency_cap``, so a profile's count of slots never starves a pace
    that found more capacity. Below ``max_concurrency`` a cut is regrown one at a time.
    ``by_latency`` (seconds per token are watched): the limit at most doubles per call, as TCP's
    slow start, so a floor sized by the pace (a guess for a model never measured) is reached
    in steps each judged by its latency, not in one jump that queues everything at once.
    """
    need = 0.0 if math.isnan(rtt_s) or math.isinf(rate) else rate * rtt_s
    floor = min(float(config.concurrency_cap), math.ceil(config.concurrency_gain * need))
    if saturated:
        limit = min(max(float(config.max_concurrency), floor), limit + 1.0)
    if limit >= config.max_concurrency:
        limit = max(limit, min(floor, 2.0 * limit) if by_latency else floor)
    return limit


def gauge_samples(state: BackpressureState, labels: Mapping[str, str]) -> list[Sample]:
    """Gauge samples (``backpressure_*``) of a controller's state for the metrics store."""
    values = state.as_dict()
    return [
        (f"backpressure_{name}", dict(labels), float(values[name]))
        for name in _GAUGES
        if values[name] is not None
    ]
