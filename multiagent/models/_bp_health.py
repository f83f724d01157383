"""What a controller's tick reads from its window: health, and how many slots the pace needs."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from multiagent._metrics import Sample
from multiagent.models._bp_types import BackpressureConfig, BackpressureState

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
    limit: float, config: BackpressureConfig, *, rate: float, rtt_s: float, saturated: bool
) -> float:
    """The concurrency limit after a healthy tick.

    One more when it was reached (AIMD's additive step). By Little's law the pace needs
    ``rate × round trip`` requests in flight (the p95 round trip, so a slower provider is met
    at once); past ``max_concurrency`` the limit follows ``concurrency_gain`` times that (BBR's
    cwnd gain), up to ``concurrency_cap``, so a profile's count of slots never starves a pace
    that found more capacity. Below ``max_concurrency`` a cut is regrown one at a time.
    """
    need = 0.0 if math.isnan(rtt_s) or math.isinf(rate) else rate * rtt_s
    floor = min(float(config.concurrency_cap), math.ceil(config.concurrency_gain * need))
    if saturated:
        limit = min(max(float(config.max_concurrency), floor), limit + 1.0)
    if limit >= config.max_concurrency:
        limit = max(limit, floor)
    return limit


def gauge_samples(state: BackpressureState, labels: Mapping[str, str]) -> list[Sample]:
    """Gauge samples (``backpressure_*``) of a controller's state for the metrics store."""
    values = state.as_dict()
    return [
        (f"backpressure_{name}", dict(labels), float(values[name]))
        for name in _GAUGES
        if values[name] is not None
    ]
