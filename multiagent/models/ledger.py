"""Tokens, cost and calls of one run, and the guard that keeps the run within its budget."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from multiagent.errors import BudgetExceededError


@dataclass
class CallRecord:
    """One model call as the ledger saw it.

    A cache hit has ``cached=True``, zero tokens and zero cost: nothing was sent. A call that
    finally failed has ``error`` set (its kind: ``rate_limit``, ``server``, ``timeout``...).
    """

    agent: str
    model: str
    input_tokens: int
    output_tokens: int
    cost_usd: float
    latency_s: float
    cached: bool
    provider: str = ""
    attempts: int = 1
    error: str | None = None


@dataclass(eq=False)  # a ledger is one run's: it is itself, not equal to another run's
class RunLedger:
    """Tokens, cost and calls of one run, and the guard that keeps it within budget."""

    budget_usd: float | None = None
    calls: list[CallRecord] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def spent_usd(self) -> float:
        """USD spent so far."""
        with self._lock:
            return sum(call.cost_usd for call in self.calls)

    def check_affordable(self, estimated_usd: float) -> None:
        """Raise :class:`BudgetExceededError` when a call of ``estimated_usd`` would pass the
        budget."""
        if self.budget_usd is None:
            return
        spent = self.spent_usd
        if spent + estimated_usd > self.budget_usd:
            raise BudgetExceededError(
                f"budget of ${self.budget_usd:.4f} reached: spent ${spent:.4f}, "
                f"the next call would cost about ${estimated_usd:.4f}",
                spent_usd=spent,
                budget_usd=self.budget_usd,
            )

    def record(self, call: CallRecord) -> None:
        """Add a finished call."""
        with self._lock:
            self.calls.append(call)

    def totals(self) -> dict[str, Any]:
        """Calls, tokens, cost, cache hits and failures so far, as JSON-ready data."""
        with self._lock:
            calls = list(self.calls)
        answered = [c for c in calls if c.error is None]
        return {
            "calls": len(calls),
            "input_tokens": sum(c.input_tokens for c in calls),
            "output_tokens": sum(c.output_tokens for c in calls),
            "cost_usd": round(sum(c.cost_usd for c in calls), 6),
            "cache_hits": sum(1 for c in calls if c.cached),
            "errors": len(calls) - len(answered),
            "retries": sum(max(0, c.attempts - 1) for c in calls),
            "latency_s": round(sum(c.latency_s for c in answered), 6),
        }
