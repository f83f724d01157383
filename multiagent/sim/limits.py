"""Token buckets for the simulator's limits, and OpenAI's rate-limit headers.

A bucket refills continuously at ``rate`` per second up to ``capacity`` (a second's worth by
default), so over any long interval it admits ``rate`` per second and no more. A request that
costs more than the whole bucket is admitted when the bucket is full and leaves it in debt, which
keeps the long-run rate exact even for requests bigger than the burst.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass
class TokenBucket:
    """A continuously refilled bucket; ``level`` may go below zero after an oversized request."""

    rate: float
    capacity: float
    level: float
    updated: float

    @classmethod
    def full(cls, rate: float, *, burst_s: float, now: float) -> TokenBucket:
        """A full bucket refilled at ``rate`` per second holding ``burst_s`` seconds of it."""
        capacity = max(1.0, rate * burst_s)
        return cls(rate=rate, capacity=capacity, level=capacity, updated=now)

    def advance(self, now: float) -> None:
        """Refill for the time elapsed up to ``now``."""
        if now > self.updated:
            self.level = min(self.capacity, self.level + (now - self.updated) * self.rate)
            self.updated = now

    def retune(self, rate: float, *, burst_s: float, now: float) -> None:
        """Change the rate from ``now`` on (a phase change); a smaller bucket sheds the excess."""
        self.advance(now)
        self.rate = rate
        self.capacity = max(1.0, rate * burst_s)
        self.level = min(self.level, self.capacity)

    def wait_for(self, cost: float) -> float:
        """Seconds until ``cost`` can be taken (0 when it can be now), at the current rate."""
        need = min(cost, self.capacity)
        if self.level >= need:
            return 0.0
        return (need - self.level) / self.rate

    def take(self, cost: float) -> None:
        """Take ``cost`` out of the bucket."""
        self.level -= cost

    def time_to_full(self) -> float:
        """Seconds until the bucket is full again."""
        return max(0.0, self.capacity - self.level) / self.rate

    def remaining(self) -> int:
        """Whole units available now (never negative)."""
        return max(0, math.floor(self.level))


def format_reset(seconds: float) -> str:
    """A duration the way OpenAI's ``x-ratelimit-reset-*`` headers write it (``"1.25s"``)."""
    if seconds < 1.0:
        return f"{math.ceil(seconds * 1000)}ms"
    if seconds < 60.0:
        return f"{_trim(seconds)}s"
    minutes, rest = divmod(seconds, 60.0)
    return f"{int(minutes)}m{_trim(rest)}s"


def _trim(seconds: float) -> str:
    return f"{math.ceil(seconds * 1000) / 1000:.3f}".rstrip("0").rstrip(".")


def retry_headers(wait_s: float) -> dict[str, str]:
    """``retry-after`` (whole seconds, rounded up) and ``retry-after-ms`` (rounded up)."""
    wait_ms = max(1, math.ceil(wait_s * 1000))
    return {"retry-after": str(max(1, math.ceil(wait_ms / 1000))), "retry-after-ms": str(wait_ms)}


def ratelimit_headers(
    *, rpm: float, tpm: float, requests: TokenBucket, tokens: TokenBucket
) -> dict[str, str]:
    """The six ``x-ratelimit-*`` headers: limits per minute, what remains now, time to full."""
    return {
        "x-ratelimit-limit-requests": str(math.floor(rpm)),
        "x-ratelimit-remaining-requests": str(requests.remaining()),
        "x-ratelimit-reset-requests": format_reset(requests.time_to_full()),
        "x-ratelimit-limit-tokens": str(math.floor(tpm)),
        "x-ratelimit-remaining-tokens": str(tokens.remaining()),
        "x-ratelimit-reset-tokens": format_reset(tokens.time_to_full()),
    }
