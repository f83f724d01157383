"""The pace (requests/s) of one controller: found by 429s and probing, or set by advertised limits.

Blind (no ``x-ratelimit-*`` headers), a provider's rate limit shows only as 429s, and a token
bucket's burst hides an overshoot until the bucket is empty. So the capacity is *measured*
only while the provider refuses: between two refusals its bucket was empty at both ends, so
what it admitted in between is its capacity (BBR's bandwidth sample, taken when the
bottleneck is known to be full). One overload is answered in two steps:

1. the first 429 of a request sent after the last decision cuts the pace at once to
   ``backoff`` × the lower of the pace and what was delivered (botocore's reaction), or to
   ``drop_backoff`` × that when the pace was not above a capacity measured before (the
   capacity fell), or back to ``settle`` × that capacity when the pace was probing above it;
2. if requests sent after that cut are still refused, the bucket is empty: each refusal less
   than ``min_measure_s`` after the first cuts again by ``measure_backoff``; the first one
   later sets the pace to ``settle`` × what the provider admitted between the two refusals (see
   :meth:`~multiagent.models._window.OutcomeWindow.admitted_between`): the capacity, measured.
   A refusal just after that (the bucket is still empty) starts a new measurement, no cut.

Between overloads the pace cruises for ``hold_s`` and then probes upward by a growth per tick
that doubles every ``probe_s`` (convex like CUBIC and BBR's startup: gentle near the capacity
just measured, quick to find capacity that appeared since), only while the pace is what holds
requests back. (A check that delivery keeps up with the pace, to spare a queueing provider,
held growth back for seconds whenever round trips lengthened and was dropped: a provider that
queues holds requests in their slots, so the pace is not what holds them back and does not grow.)
"""

from __future__ import annotations

import math

from multiagent.models._bp_types import BackpressureConfig
from multiagent.models._window import OutcomeWindow


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
        self._returned = False  # step 1 went back to a measured capacity
        self._refused_at = -math.inf  # send time of the refusal that began this overload

    def on_rate_limited(self, *, sent_at: float, now: float, window: OutcomeWindow) -> bool:
        """Answer a 429 of a request sent at ``sent_at``; return whether the pace changed."""
        if sent_at <= self._decided:
            return False  # sent before our last cut: that overload is being answered already
        cfg = self.config
        if sent_at - self._refused_at <= cfg.measure_s:
            if sent_at - self._refused_at < cfg.min_measure_s:
                if self._returned:
                    return False  # back at a measured capacity: the probe emptied the bucket
                # refusals too close together to tell a rate yet; still refused after a cut,
                # so cut again while measuring (the measurement does not depend on our pace)
                self.rate = max(cfg.min_requests_per_s, self.rate * cfg.measure_backoff)
                self._decided = now
                self.cuts += 1
                return True
            measured = window.admitted_between(self._refused_at, sent_at)
            if measured > 0:
                self.capacity = measured
                self.rate = max(cfg.min_requests_per_s, min(self.rate, cfg.settle * measured))
            else:  # nothing got through between the refusals (another client took it all)
                self.rate = max(cfg.min_requests_per_s, self.rate * cfg.measure_backoff)
            self._refused_at = -math.inf
            self._settled_at = now
        elif now - self._settled_at <= cfg.measure_s:
            # just after a measurement the provider's bucket is empty, so a refusal is no proof
            # of a new overload: measure again before cutting
            self._refused_at = sent_at
            return False
        else:
            delivered = window.delivered_rate(now, span_s=cfg.measure_s, since=self._decided)
            base = self.rate if delivered is None else min(self.rate, delivered)
            target = base * cfg.backoff
            self._returned = self.capacity is not None and self.rate > self.capacity
            if self._returned and self.capacity is not None:
                # a probe above a measured capacity: back to it (if the capacity fell, the
                # refusals go on and step 2 measures it again)
                target = max(target, min(self.rate, cfg.settle * self.capacity))
            elif self.capacity is not None:
                # refused below a capacity measured before: it fell, maybe far
                target = base * cfg.drop_backoff
            self.rate = max(cfg.min_requests_per_s, target)
            self._refused_at = sent_at
        self._decided = now
        self.cuts += 1
        return True

    def grow(self, now: float) -> bool:
        """Probe upward once per tick while the pace holds requests back; return whether it grew."""
        cfg = self.config
        quiet = now - max(self._decided, self._start)
        if quiet < cfg.hold_s or self.rate >= self.ceiling:
            return False
        doublings = min(6.0, (quiet - cfg.hold_s) / cfg.probe_s)
        growth = min(cfg.max_growth, cfg.growth * 2**doublings)
        self.rate = min(self.ceiling, self.rate * (1.0 + growth))
        return True

    def advertised(self, rps: float, previous: float | None) -> None:
        """A provider advertised ``rps`` (before: ``previous``): follow it within ``headroom``."""
        cfg = self.config
        self.ceiling = min(cfg.max_requests_per_s or math.inf, rps * cfg.headroom)
        scaled = self.ceiling if previous is None else self.rate * rps / previous
        self.rate = min(self.ceiling, max(cfg.min_requests_per_s, scaled))
