"""A sliding window of call outcomes: error rate, RTT percentiles, delivered rate."""

from __future__ import annotations

import itertools
import math
import statistics
from collections import deque
from dataclasses import dataclass
from typing import Literal

#: ``ok``: answered; ``rate_limit``: 429; ``error``: 5xx, timeout, connection failure;
#: ``client``: any other 4xx (our fault, not the provider's health).
OutcomeKind = Literal["ok", "rate_limit", "error", "client"]


@dataclass(frozen=True)
class Outcome:
    """One finished request."""

    at: float
    rtt_s: float
    kind: OutcomeKind


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values`` by the nearest-rank method; NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


class OutcomeWindow:
    """The outcomes of the last ``span_s`` seconds (at most ``max_samples`` of them)."""

    def __init__(self, *, span_s: float, memory_s: float = 0.0, max_samples: int = 2000) -> None:
        self.span_s = span_s
        #: how far back send and refusal times are kept (capacity measurements reach that far)
        self.memory_s = max(span_s, memory_s)
        self._items: deque[Outcome] = deque(maxlen=max_samples)
        self._sends: deque[float] = deque(maxlen=10 * max_samples)
        self._refused: deque[float] = deque(maxlen=10 * max_samples)

    def add(self, outcome: Outcome) -> None:
        """Record an outcome (outcomes arrive in time order)."""
        self._items.append(outcome)
        if outcome.kind == "rate_limit":
            self._refused.append(outcome.at - outcome.rtt_s)

    def _prune(self, now: float) -> None:
        horizon = now - self.span_s
        while self._items and self._items[0].at < horizon:
            self._items.popleft()
        horizon = now - self.memory_s
        for times in (self._sends, self._refused):
            while times and times[0] < horizon:
                times.popleft()

    def health_samples(self, now: float) -> list[Outcome]:
        """Outcomes that speak about the provider's health: answers and server-side failures."""
        self._prune(now)
        return [o for o in self._items if o.kind in ("ok", "error")]

    def error_rate(self, now: float) -> tuple[float, int]:
        """Share of server-side failures among answers and failures, and how many were seen."""
        samples = self.health_samples(now)
        if not samples:
            return 0.0, 0
        errors = sum(1 for o in samples if o.kind == "error")
        return errors / len(samples), len(samples)

    def rtt(self, now: float, q: float) -> float:
        """The ``q`` quantile of the round-trip times of answered requests (NaN when none)."""
        self._prune(now)
        return percentile([o.rtt_s for o in self._items if o.kind == "ok"], q)

    def recent_rtt(self, count: int = 8) -> float:
        """The median round trip of the last ``count`` answers (NaN with fewer)."""
        answers = (o.rtt_s for o in reversed(self._items) if o.kind == "ok")
        recent = list(itertools.islice(answers, count))
        return statistics.median(recent) if len(recent) >= count else math.nan

    def delivered_rate(self, now: float, *, span_s: float, since: float) -> float | None:
        """Answers per second over the last ``span_s`` seconds, not reaching back before ``since``.

        ``None`` when the interval is shorter than a quarter of ``span_s`` or holds fewer than
        three answers: too little to measure a rate.
        """
        start = max(now - span_s, since)
        seconds = now - start
        if seconds < span_s / 4:
            return None
        answered = sum(1 for o in self._items if o.kind == "ok" and o.at >= start)
        if answered < 3:
            return None
        return answered / seconds

    def sent(self, at: float) -> None:
        """Record that a request was sent at ``at`` (sends arrive in time order)."""
        self._sends.append(at)

    def admitted_between(self, first: float, last: float) -> float:
        """Requests sent strictly between two refused sends and not refused, per second.

        A provider that refused at ``first`` and at ``last`` had (about) an empty bucket at
        both moments, so what it admitted in between is its capacity times the interval,
        within one request, however fast we sent. A refusal comes back at once, so every 429
        of those sends is known; server failures are discounted at the window's error rate.
        """
        return self.measure(first, last)[0]

    def measure(self, first: float, last: float) -> tuple[float, float]:
        """:meth:`admitted_between`, and the most it left unused at any moment, in seconds of it.

        The second figure bounds the provider's bucket, had it admitted at that rate all along:
        above its burst (often one second), the bucket overflowed and the rate is a lower bound.
        """
        seconds = last - first
        if seconds <= 0:
            return math.nan, math.nan
        refused = sum(1 for at in self._refused if first < at < last)
        sends = [at for at in self._sends if first < at < last]
        return admitted_profile(sends, refused, first, last, self._error_share())

    def _error_share(self) -> float:
        errors, answers = self._errors_and_answers()
        return errors / (errors + answers) if errors + answers else 0.0

    def _errors_and_answers(self) -> tuple[int, int]:
        errors = sum(1 for o in self._items if o.kind == "error")
        return errors, sum(1 for o in self._items if o.kind == "ok")


def admitted_profile(
    sends: list[float], refused: int, first: float, last: float, error_share: float
) -> tuple[float, float]:
    """Admitted per second between ``first`` and ``last``, and the peak unused credit (seconds).

    ``sends`` are the send times (in order) within the interval, ``refused`` how many of them
    were refused; each send counts for its share of what was admitted.
    """
    seconds = last - first
    admitted = max(0, len(sends) - refused) * (1.0 - error_share)
    rate = admitted / seconds
    if rate <= 0:
        return rate, math.nan
    keep = admitted / max(1, len(sends))
    peak, count = 0.0, 0.0
    for at in sends:
        peak = max(peak, rate * (at - first) - count)
        count += keep
    return rate, peak / rate
