"""The pace (requests/s) of one controller: found by 429s and probing, or set by advertised limits.

Blind (no ``x-ratelimit-*`` headers), a provider's rate limit shows only as 429s, and a token
bucket's burst hides an overshoot until the bucket is empty. So the capacity is *measured*
only while the provider refuses: a refusal means its bucket was empty then, so what it
admitted between two refusals is its capacity times the interval, within one request (BBR's
bandwidth sample, taken when the bottleneck is known to be full). The send time of the last
refusal is kept as the *anchor* of the next measurement.

A refusal of a request sent after the last decision is answered by what it tells:

- a refusal while cruising at or below a measured capacity means it fell (maybe far): the
  pace drops to ``drop_backoff`` × the delivered rate, below it, so that the next refusal,
  where the pace meets it again, is both the only other 429 and a measurement;
- a refusal less than ``min_measure_s`` after the anchor cuts by ``measure_backoff`` (too
  close to tell a rate), unless it was sent within two sends of a return to a measured
  capacity (the bucket is still empty: no news);
- a refusal up to ``measure_s`` after the anchor measures the capacity and sets the pace to
  ``settle`` × it. If we left more than ``overflow_s`` seconds of it unused meanwhile, the
  provider's bucket may have overflowed (what overflows is never admitted): the measure is a
  lower bound, and the next probe comes soon;
- a refusal with no anchor that recent starts a measurement: a probe above a known capacity
  goes back to ``settle`` × it; with no capacity known, the pace drops to ``backoff`` × the
  delivered rate (botocore's reaction).

*Probing* for a raised capacity is convex growth per tick (``growth`` doubling every
``probe_s`` up to ``max_growth``, gentle near the capacity, quick to find one far above: CUBIC
and BBR's startup), only while the pace is what holds requests back, after ``probe_wait`` of
quiet. A probe that finds the ceiling where it was costs one 429, so while the ceiling holds
the wait doubles after each such probe, up to ``1 / (probe_share × capacity)``: at most
``probe_share`` of attempts are refused however small the capacity, where a fixed period
costs ``1 / (capacity × period)`` (4% at 8 req/s every 3 s). It falls back to ``hold_s`` when
a probe finds more (more admitted since the anchor than the capacity allows: the bucket, empty
then, cannot have held it), when a measurement finds more, or when the median round trip
moves by ``rtt_shift`` either way (the provider's load changed: TCP BBR re-probes on such
path changes, Vegas reads them as a changed base RTT). Once a fall is measured it starts at
its longest: a fall is no sign of a raise to come.
"""

from __future__ import annotations

import math

from multiagent.models._bp_types import BackpressureConfig
from multiagent.models._window import OutcomeWindow

#: How far back the delivered rate that a first refusal cuts from is read.
_DELIVERY_SPAN_S = 2.0
#: Measurements within this share of the capacity are "the same ceiling".
_SAME = 0.08


class Pace:
    """Requests per second for one controller, and how it adapts."""

    def __init__(self, config: BackpressureConfig, *, now: float) -> None:
        self.config = config
        self.ceiling = config.max_requests_per_s or math.inf
        start = config.initial_requests_per_s or config.requests_per_s
        self.rate = min(start, self.ceiling)
        self.capacity: float | None = None
        self.cuts = 0
        self._start = now
        self._decided = -math.inf  # when the pace was last cut (sends before it are answered)
        self._settled_at = -math.inf  # when a measured capacity last set the pace
        self._returned = False  # the pace was set to a measured capacity (the bucket is empty)
        self._refused_at = -math.inf  # the anchor: send time of the last refusal
        self.probe_wait = config.hold_s  # quiet before the next probe
        self._rtt_ref = math.nan  # median round trip when the ceiling was last found
        self._fell_from = math.nan  # the capacity measured before a fall (to compare)

    def on_rate_limited(self, *, sent_at: float, now: float, window: OutcomeWindow) -> bool:
        """Answer a 429 of a request sent at ``sent_at``; return whether the pace changed."""
        if sent_at <= self._decided:
            return False  # sent before our last cut: that overload is being answered already
        cfg = self.config
        since = sent_at - self._refused_at
        if since < cfg.min_measure_s:
            if self._returned and sent_at - self._decided < self._grace():
                # sent just after we went back to a measured capacity: the bucket is still
                # empty, no news
                return False
            if self._cruising():
                self._first_refusal(window, now)  # refused again there: the capacity fell
                self._refused_at = sent_at
            else:
                # refusals too close together to tell a rate yet; still refused after a cut,
                # so cut again while measuring (the measurement does not depend on our pace)
                self._cut(self.rate * cfg.measure_backoff)
        elif since <= cfg.measure_s and not self._cruising():
            self._measured(*window.measure(self._refused_at, sent_at), now=now)
            self._refused_at = sent_at
        else:
            self._first_refusal(window, now)
            self._refused_at = sent_at
        self._decided = now
        self.cuts += 1
        return True

    def _grace(self) -> float:
        """How long after a return to the capacity a refusal is no news: two sends' time."""
        return 2.0 / self.rate

    def _cruising(self) -> bool:
        """Whether the pace is at or below a measured capacity (a refusal then means a fall)."""
        return self.capacity is not None and self.rate <= self.capacity

    def _cut(self, rate: float) -> None:
        self.rate = max(self.config.min_requests_per_s, min(self.ceiling, rate))
        self._returned = False

    def _measured(self, measured: float, unused_s: float, *, now: float) -> None:
        """Set the pace to a measured capacity and decide how soon to probe above it."""
        cfg = self.config
        if not measured > 0:  # nothing got through between the refusals (another client)
            self._cut(self.rate * cfg.measure_backoff)
            return
        previous = self.capacity if self.capacity is not None else self._fell_from
        self._fell_from = math.nan
        if math.isnan(previous):
            self.probe_wait = 2 * cfg.hold_s  # the first ceiling: keep looking, less often
        elif unused_s > cfg.overflow_s:
            # we left more unused than the provider's bucket may hold: what overflowed was
            # never admitted, so the measure is a lower bound; look again soon
            self.probe_wait = 2 * cfg.hold_s
        elif measured > previous * (1 + _SAME):
            self.probe_wait = cfg.hold_s  # it rose: there may be more
        elif measured >= previous * (1 - _SAME):
            self.probe_wait = min(self._longest_wait(measured), 2 * self.probe_wait)
        else:
            self.probe_wait = self._longest_wait(measured)  # it fell
        self.capacity = measured
        self._cut(cfg.settle * measured)
        self._returned = True
        self._settled_at = now
        self._rtt_ref = math.nan

    def _first_refusal(self, window: OutcomeWindow, now: float) -> None:
        """A refusal with no recent anchor: go back below the ceiling and start measuring."""
        cfg = self.config
        capacity = self.capacity
        if capacity is not None and self.rate > capacity:
            # a probe above a measured capacity failed: back to it (if the capacity fell, the
            # refusals go on and are measured)
            self.probe_wait = min(self._longest_wait(capacity), 2 * self.probe_wait)
            self._cut(min(self.rate, cfg.settle * capacity))
            self._returned = True
            return
        delivered = window.delivered_rate(now, span_s=_DELIVERY_SPAN_S, since=self._decided)
        base = self.rate if delivered is None else min(self.rate, delivered)
        if capacity is not None:
            # refused below a capacity measured before: it fell, maybe far; the refusal where
            # the pace meets it again measures it
            self._fell_from, self.capacity = capacity, None
            self.probe_wait = cfg.hold_s
            self._cut(base * cfg.drop_backoff)
        else:
            self._cut(base * cfg.backoff)

    def _longest_wait(self, capacity: float) -> float:
        """The probe wait that refuses ``probe_share`` of attempts while the ceiling holds."""
        cfg = self.config
        return max(cfg.hold_s, 1.0 / (cfg.probe_share * max(capacity, cfg.min_requests_per_s)))

    def note_rtt(self, median_s: float, now: float) -> None:
        """The recent median round trip: a shift by ``rtt_shift`` means probe soon again."""
        if math.isnan(median_s) or median_s <= 0:
            return
        ref = self._rtt_ref
        if math.isnan(ref):
            self._rtt_ref = median_s
            return
        shift = self.config.rtt_shift
        if median_s > ref * shift or median_s * shift < ref:
            self._rtt_ref = median_s
            self.probe_wait = self.config.hold_s

    def grow(self, now: float, window: OutcomeWindow | None = None) -> bool:
        """Probe upward once per tick while the pace holds requests back; return whether it grew."""
        cfg = self.config
        quiet = now - max(self._decided, self._start)
        if quiet < self.probe_wait or self.rate >= self.ceiling:
            return False
        if window is not None and self._raised(now, window):
            self.capacity = None  # obsolete; the next refusals measure the new one
            self._refused_at = -math.inf
            self.probe_wait = cfg.hold_s
        doublings = min(6.0, (quiet - self.probe_wait) / cfg.probe_s)
        growth = min(cfg.max_growth, cfg.growth * 2**doublings)
        self.rate = min(self.ceiling, self.rate * (1.0 + growth))
        self._returned = False
        return True

    def _raised(self, now: float, window: OutcomeWindow) -> bool:
        """More was admitted since the anchor than the measured capacity allows: it rose."""
        capacity, seconds = self.capacity, now - self._refused_at
        if capacity is None or not 0 < seconds <= self.config.measure_s:
            return False
        admitted = window.measure(self._refused_at, now)[0] * seconds
        return admitted > capacity * seconds * (1 + _SAME) + 2

    def advertised(self, rps: float, previous: float | None) -> None:
        """A provider advertised ``rps`` (before: ``previous``): follow it within ``headroom``."""
        cfg = self.config
        self.ceiling = min(cfg.max_requests_per_s or math.inf, rps * cfg.headroom)
        scaled = self.ceiling if previous is None else self.rate * rps / previous
        self.rate = min(self.ceiling, max(cfg.min_requests_per_s, scaled))
