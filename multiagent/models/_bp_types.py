"""Configuration, state and tickets of the backpressure controller, and how it reads outcomes."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from multiagent.models._window import OutcomeKind
from multiagent.models.provider_errors import error_kind
from multiagent.policies import RateLimitConfig


@dataclass(frozen=True)
class BackpressureConfig:
    """Bounds and reflexes of one controller; :meth:`from_profile` maps a profile onto it.

    The pace starts at ``initial_requests_per_s`` (else ``requests_per_s``, the profile's rate)
    and is bounded only by ``max_requests_per_s`` (when set) and a provider's advertised limit;
    tokens/s (``tokens_per_s``) stays a hard bound. How the other fields steer it is told in
    :mod:`multiagent.models.backpressure` and :mod:`multiagent.models._pace`.
    """

    max_concurrency: int = 8
    min_concurrency: int = 1
    requests_per_s: float = 10.0
    initial_requests_per_s: float | None = None
    max_requests_per_s: float | None = None
    min_requests_per_s: float = 0.05
    tokens_per_s: float | None = None
    error_rate_threshold: float = 0.10
    rtt_threshold_s: float = 5.0
    latency_rise: float = 2.0
    latency_samples: int = 4
    max_wait_multiplier: float = 3.0
    window_s: float = 10.0
    min_samples: int = 20
    tick_s: float = 0.5
    backoff: float = 0.85
    drop_backoff: float = 0.4
    measure_backoff: float = 0.7
    settle: float = 0.97
    limit_backoff: float = 0.7
    growth: float = 0.04
    max_growth: float = 0.25
    hold_s: float = 1.5
    probe_s: float = 0.5
    concurrency_gain: float = 2.0
    concurrency_cap: int = 256
    headroom: float = 0.98
    measure_s: float = 20.0
    min_measure_s: float = 0.4
    overflow_s: float = 0.5
    probe_share: float = 0.01
    rtt_shift: float = 1.5
    burst_s: float = 1.0
    use_limit_headers: bool = True

    def __post_init__(self) -> None:
        if not 1 <= self.min_concurrency <= self.max_concurrency:
            raise ValueError("need 1 <= min_concurrency <= max_concurrency")
        if not 0 < self.min_requests_per_s <= self.requests_per_s:
            raise ValueError("need 0 < min_requests_per_s <= requests_per_s")
        if self.max_requests_per_s is not None and self.max_requests_per_s < self.requests_per_s:
            raise ValueError("need max_requests_per_s >= requests_per_s")
        fractions = (
            self.backoff,
            self.drop_backoff,
            self.measure_backoff,
            self.settle,
            self.limit_backoff,
            self.headroom,
        )
        if not all(0 < value <= 1 for value in fractions) or self.backoff == 1:
            raise ValueError("backoffs, settle and headroom must lie in (0, 1]; backoff below 1")
        if self.latency_rise <= 1 or self.latency_samples < 1:
            raise ValueError("need latency_rise > 1 and latency_samples >= 1")
        if self.concurrency_cap < self.max_concurrency:
            raise ValueError("need concurrency_cap >= max_concurrency")

    @classmethod
    def from_profile(cls, rate_limit: RateLimitConfig, **overrides: Any) -> BackpressureConfig:
        """Bounds and thresholds from a profile's ``rate_limit`` section."""
        values: dict[str, Any] = {
            "max_concurrency": rate_limit.max_concurrency,
            "requests_per_s": rate_limit.requests_per_minute / 60.0,
            "tokens_per_s": rate_limit.tokens_per_minute / 60.0,
            "error_rate_threshold": rate_limit.error_rate_threshold,
            "rtt_threshold_s": rate_limit.rtt_threshold_s,
            "max_wait_multiplier": rate_limit.max_wait_multiplier,
        }
        values.update(overrides)
        return cls(**values)


@dataclass(frozen=True)
class BackpressureState:
    """What a controller is doing, for metrics and benchmarks."""

    limit: int
    in_flight: int
    queued: int
    rate_per_s: float
    ceiling_per_s: float
    wait_multiplier: float
    error_rate: float
    samples: int
    rtt_p50_s: float | None
    rtt_p95_s: float | None
    paused_for_s: float
    time_paused_s: float
    advertised_requests_per_s: float | None
    rate_cuts: int
    limit_cuts: int

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready state."""
        return asdict(self)


@dataclass(eq=False)
class Ticket:
    """One request's passage through the controller."""

    tokens: int
    holds_slot: bool = False
    slot_at: float | None = None
    epoch: int = -1
    sent_at: float | None = None
    done: bool = False
    #: Its controller's count of sends once it went, when nothing else was out then; 0
    #: otherwise. Still the count when it ends: it ran alone (``TokenLatency.ran_alone``).
    solo: int = 0


def kind_of(error: BaseException | None) -> OutcomeKind:
    if error is None:
        return "ok"
    kind = error_kind(error)
    if kind == "rate_limit":
        return "rate_limit"
    if kind in ("server", "timeout", "connection"):
        return "error"
    return "client"


def concurrency_refusal(headers: Mapping[str, str] | None) -> bool:
    """A 429 while both request and token budgets remain was refused for concurrency."""
    if not headers:
        return False
    lowered = {k.lower(): v for k, v in headers.items()}
    remaining = [lowered.get(f"x-ratelimit-remaining-{dim}") for dim in ("requests", "tokens")]
    try:
        return all(value is not None and int(value) > 0 for value in remaining)
    except ValueError:
        return False
