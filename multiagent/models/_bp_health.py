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
from multiagent.models._bp_types import BackpressureConfig, BackpressureState, Ticket
from multiagent.models._window import OutcomeWindow

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
    #: Every slot was taken at once (whether or not a request then waited for one).
    reached: bool = False
    pace_bound: bool = False
    rate_limited: bool = False


class TokenLatency:
    """A model's recent answers against what it takes unloaded, for answers of their length.

    An answer's latency grows with its output tokens (prefill plus a pace per token), so a
    recent answer is compared with the history's answers scaled to its length: the unloaded
    latency for ``n`` tokens is at most ``rtt × max(1, n / tokens)`` of any earlier answer (a
    longer answer took at least as long as a shorter one would have; a shorter one scaled up
    proportionally overstates the prefill), and the least of those bounds is the usual figure
    (Vegas's base RTT, per length): what the model takes when nothing waits ahead of its
    requests. Comparing seconds per token instead would read a server whose latency is mostly
    its time to first token as overloaded whenever short answers follow long ones. The recent
    figure is the median ratio of the last ``recent`` answers *sent* after the last change of
    the limit (a cut or a growth: :meth:`judged`), so one long prompt does not read as a queue,
    and a change is judged on requests that met it (TCP Vegas adjusts once per round trip for
    that reason).

    That least figure is what the model takes unloaded only if some answer met no queue. A
    first wave goes out together, and the first answer of a cold server also carries its first
    reading of the prompt (llama.cpp's prefix cache was empty: 8 times a warm call, seen in
    CI), so all answers may be queued or inflated and every rise read small. An answer that ran
    *alone* (nothing else of the controller's was out from its send to its end) is the one
    that proves the figure: until one came back (``confirmed``), the limit does not grow but
    takes one alone first (:func:`settled_limit`).
    """

    def __init__(self, *, recent: int = 8, history: int = 128) -> None:
        self._recent: deque[tuple[float, int]] = deque(maxlen=recent)
        self._history: deque[tuple[float, int]] = deque(maxlen=history)
        self._since = -math.inf
        self._sends = 0
        #: Whether an answer that ran alone was recorded.
        self.confirmed = False
        #: The limit to return to once an answer taken alone came back (a probe is on).
        self.probe_restore: float | None = None

    @property
    def known(self) -> bool:
        """Whether any answer reported its output tokens (then latency is judged per token)."""
        return bool(self._history)

    def sent(self, ticket: Ticket, *, others_out: bool) -> None:
        """``ticket`` was sent; ``others_out``: other requests of the controller were out."""
        self._sends += 1
        ticket.solo = 0 if others_out else self._sends

    def ran_alone(self, ticket: Ticket) -> bool:
        """Whether ``ticket``, ending now, was sent with nothing else out and nothing since."""
        return ticket.solo == self._sends

    def add(self, *, sent_at: float, rtt_s: float, output_tokens: int, alone: bool = False) -> None:
        """Record an answer of ``output_tokens`` tokens sent at ``sent_at``, ``rtt_s`` long;
        ``alone``: nothing else of the controller's was out while it was."""
        answer = (max(rtt_s, 0.0), max(1, output_tokens))
        self.confirmed = self.confirmed or alone
        if sent_at >= self._since:
            self._recent.append(answer)
        self._history.append(answer)

    def usual(self, tokens: int) -> float:
        """The least latency the history bounds an unloaded answer of ``tokens`` tokens by."""
        return min(rtt * max(1.0, tokens / length) for rtt, length in self._history)

    def rise(self, *, min_samples: int) -> float:
        """Recent latency over the usual one for the same lengths (the median ratio); NaN with
        fewer than ``min_samples`` recent answers."""
        if len(self._recent) < max(1, min_samples):
            return math.nan
        return self._median_ratio(self._recent)

    def rise_of_all(self) -> float:
        """Every answer kept over the usual latency for its length (the median ratio): how
        long answers waited so far, once the usual figure is one an answer alone proved."""
        return self._median_ratio(self._history)

    def _median_ratio(self, answers: deque[tuple[float, int]]) -> float:
        ratios = [rtt / usual for rtt, tokens in answers if (usual := self.usual(tokens)) > 0]
        return statistics.median(ratios) if ratios else math.nan

    def judged(self, *, at: float) -> None:
        """The limit changed at ``at``: the next judgement reads answers sent from then on."""
        self._recent.clear()
        self._since = at


#: The header in which OpenAI's API (and the simulator) say how long the server took.
PROCESSING_HEADER = "openai-processing-ms"


def served_seconds(headers: Mapping[str, str] | None) -> float | None:
    """The server's own time for a whole (not streamed) answer, from ``openai-processing-ms``.

    Latency is judged on it where it is given, not on the round trip the client measured: a
    client busy with its own work (a worker preparing its next calls while others are out)
    reads its answers late, and that delay is not the provider's queue. Servers that send no
    such header (vLLM, llama.cpp) are judged on the round trip.
    """
    if not headers:
        return None
    raw = headers.get(PROCESSING_HEADER)
    try:
        value = float(raw) / 1000 if raw is not None else None
    except ValueError:
        return None
    return value if value is not None and value >= 0 and math.isfinite(value) else None


def judged_latency(kind: str | None, round_trip_s: float, served_s: float | None) -> float:
    """The latency an outcome is judged on: the server's own time for an answer it timed,
    else the round trip."""
    return served_s if kind == "ok" and served_s is not None else round_trip_s


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
    may grow."""

    unhealthy: bool
    scale: float = 1.0
    may_grow: bool = True


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
        if rise > config.latency_rise:
            return Health(unhealthy=True, scale=min(config.limit_backoff, 1.0 / rise))
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


def settled_limit(
    limit: float,
    grown: float,
    latency: TokenLatency,
    config: BackpressureConfig,
    *,
    now: float,
    reached: bool,
) -> float:
    """The limit after a healthy tick that :func:`fit_limit` would take to ``grown``.

    While latency is judged per token and no answer ran alone yet, a growth is not taken. Where
    the limit was ``reached`` (every slot taken at once), it drops to one slot (unless
    ``min_concurrency`` forbids it) until one answer, sent with nothing else out, comes back
    (TCP BBR's ProbeRTT, which drains the queue to measure the path's own round trip), and then
    returns to where it was, cut as a tick would have cut it had the answers before been
    judged against that figure (so a queue is not built again to be seen); elsewhere
    it stays (RFC 7661: a window the sender does not fill is not grown). It costs a drain and
    one round trip, once per controller; a one-at-a-time server whose first answers were all
    queued (or slowed by a cold start) otherwise reads as healthy, and the Little's-law floor,
    sized by queued round trips, doubles the limit into its queue (seen in CI: 6 requests queued
    at llama.cpp's server for a whole batch). Every change of the limit is judged on answers
    sent after it.
    """
    if latency.probe_restore is not None:
        if not latency.confirmed:
            return limit
        restore, latency.probe_restore = latency.probe_restore, None
        latency.judged(at=now)
        rise = latency.rise_of_all()  # what the answers before it waited: cut as if known
        if rise > config.latency_rise:
            restore *= min(config.limit_backoff, 1.0 / rise)
        return max(limit, float(config.min_concurrency), restore)
    if grown <= limit or not latency.known:
        return grown
    if latency.confirmed:
        latency.judged(at=now)
        return grown
    if not reached:
        return limit
    latency.judged(at=now)
    if config.min_concurrency > 1:  # no answer can be taken alone: grown as judged so far
        return grown
    latency.probe_restore = limit
    return 1.0


def gauge_samples(state: BackpressureState, labels: Mapping[str, str]) -> list[Sample]:
    """Gauge samples (``backpressure_*``) of a controller's state for the metrics store."""
    values = state.as_dict()
    return [
        (f"backpressure_{name}", dict(labels), float(values[name]))
        for name in _GAUGES
        if values[name] is not None
    ]
