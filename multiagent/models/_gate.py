"""The provider-wide pause a 429's Retry-After imposes, shared by every limiter of a provider."""

from __future__ import annotations

import math
import threading
from collections.abc import Callable


class ProviderGate:
    """No request to the provider leaves before :attr:`until` (monotonic seconds).

    One gate per provider endpoint per process: a rate limit applies to the account, so the
    pause one agent is told about holds for every agent and every model sent to that endpoint.
    """

    def __init__(self, *, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._until = -math.inf
        self._paused_total = 0.0
        self.pauses = 0

    @property
    def until(self) -> float:
        """The moment sending may resume (``-inf`` when never paused)."""
        with self._lock:
            return self._until

    def pause(self, seconds: float) -> bool:
        """Hold every send for ``seconds`` from now; return whether the pause was extended."""
        now = self._clock()
        end = now + max(0.0, seconds)
        with self._lock:
            if end <= self._until:
                return False
            self._paused_total += end - max(now, self._until)
            self._until = end
            self.pauses += 1
            return True

    def remaining(self) -> float:
        """Seconds left of the current pause (0 when open)."""
        with self._lock:
            return max(0.0, self._until - self._clock())

    def time_paused(self) -> float:
        """Seconds spent paused so far (the part of the current pause still ahead excluded)."""
        with self._lock:
            return self._paused_total - max(0.0, self._until - self._clock())
