"""One run's model calls and the guard that keeps the run within its budget.

Every model call ends as exactly one :class:`CallRecord` (answered, served from the cache,
failed or cancelled). A verdict the analysis cache answered makes no call, so no call record:
it is an :class:`AnalysisHit`, kept beside the calls and reported as ``analysis_cache_hits``
(each hit is one lookup the analysis cache counted too, so the figures agree with the metrics;
the completion cache's ``cache_hits`` stay the calls it answered). The ledger keeps them in
order; everything that reports a run's usage —
the per-node usage in graph state, ``--json``, the metrics store, trace attributes and what
``--resume`` takes off the budget — is derived from these records, so the figures agree.

The budget is kept with reservations: before a call goes to the provider it reserves its worst
case (:meth:`RunLedger.reserve`); when it ends the reservation is settled to the real cost or
released. A call is admitted only when settled spend plus every open reservation plus its own
worst case fits the budget, so however many calls run in parallel the settled spend stays within
it (provided the worst case is one: see :mod:`multiagent.models.budget`). A ledger given a
``shared`` budget (a batch's or thread's, in Redis) also reserves and settles every call there,
so runs in many processes stay within one total; without one nothing leaves the process.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import threading
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from multiagent.errors import BudgetExceededError

# at run time, not under TYPE_CHECKING: pydantic models holding a ledger resolve its fields
from multiagent.models.budget import ProjectBudget

Outcome = Literal["ok", "cached", "error", "cancelled"]
OUTCOMES: tuple[Outcome, ...] = ("ok", "cached", "error", "cancelled")


@dataclass(frozen=True)
class CallRecord:
    """One model call, as every report sees it.

    Attributes:
        agent: Who called.
        model: The provider model.
        input_tokens: Prompt tokens: the provider's figure, else the tiktoken estimate.
        output_tokens: Output tokens: the provider's figure, else counted from the text seen.
        cost_usd: What the call cost at the price table's rates (0 for a cache hit).
        latency_s: Seconds from the start of the call to its end.
        outcome: ``ok``, ``cached`` (served from the completion cache, nothing sent),
            ``error`` (failed after its last attempt) or ``cancelled`` (the caller gave up).
        provider: The provider name.
        attempts: Attempts sent to the provider (0 for a cache hit).
        error: The kind of the final error (``rate_limit``, ``server``, ``timeout``...).
        node: The graph node that made the call ("" outside a node).
        scope: Identifies one execution of a node (see :mod:`multiagent.nodes.calling`).
        estimated: The tokens are the estimator's, not the provider's.
        saved_usd: For a cache hit, what the cached answer cost when it was first made.
    """

    agent: str
    model: str
    input_tokens: int
    output_tokens: int
    cost_usd: float
    latency_s: float
    outcome: Outcome = "ok"
    provider: str = ""
    attempts: int = 1
    error: str | None = None
    node: str = ""
    scope: int = 0
    estimated: bool = False
    saved_usd: float = 0.0

    @property
    def cached(self) -> bool:
        """Served from the completion cache."""
        return self.outcome == "cached"

    def attributes(self) -> dict[str, Any]:
        """The record as trace attributes (``gen_ai.*`` and ``multiagent.*``)."""
        return {
            "gen_ai.usage.input_tokens": self.input_tokens,
            "gen_ai.usage.output_tokens": self.output_tokens,
            "multiagent.cost_usd": round(self.cost_usd, 10),
            "multiagent.saved_usd": round(self.saved_usd, 10),
            "multiagent.cached": self.cached,
            "multiagent.outcome": self.outcome,
            "multiagent.tokens_estimated": self.estimated,
            "multiagent.attempts": self.attempts,
        }


def totals_of(records: Iterable[CallRecord]) -> dict[str, Any]:
    """Calls, tokens, cost, cache hits, failures and retries of ``records``, JSON-ready."""
    # one pass: a node's usage is read from its records after every call it makes
    calls = tokens_in = tokens_out = retries = 0
    cost = latency = saved = 0.0
    counted = dict.fromkeys(OUTCOMES, 0)
    for c in records:
        calls += 1
        tokens_in += c.input_tokens
        tokens_out += c.output_tokens
        cost += c.cost_usd
        saved += c.saved_usd
        retries += max(0, c.attempts - 1)
        counted[c.outcome] += 1
        if c.outcome == "ok":
            latency += c.latency_s
    return {
        "calls": calls,
        "input_tokens": tokens_in,
        "output_tokens": tokens_out,
        "cost_usd": round(cost, 8),
        "cache_hits": counted["cached"],
        "errors": counted["error"],
        "cancelled": counted["cancelled"],
        "retries": retries,
        "latency_s": round(latency, 6),
        "saved_usd": round(saved, 8),
    }


@dataclass(frozen=True)
class AnalysisHit:
    """A result the analysis cache answered (no call made), as every report sees it.

    Attributes:
        agent: Whose result it was (a validator's verdict).
        model: The model that made it.
        node: The graph node that looked it up.
        scope: Identifies one execution of a node (see :mod:`multiagent.nodes.calling`).
    """

    agent: str
    model: str
    node: str = ""
    scope: int = 0


@dataclass(frozen=True)
class Reservation:
    """Budget held for one call in flight, until it is settled or released."""

    id: int
    usd: float
    shared: str | None = None  # the reservation's id in the ledger's shared budget


_ids = itertools.count(1)


def check_budget_value(value: float | None, *, source: str) -> None:
    """Raise ``ConfigError`` for a budget that is negative, NaN or infinite."""
    from multiagent.errors import ConfigError

    if value is not None and (not math.isfinite(value) or value < 0):
        raise ConfigError(
            f"invalid budget {value!r} (from {source}): a finite amount of USD, at least 0"
        )


@dataclass(eq=False)  # a ledger is one run's: it is itself, not equal to another run's
class RunLedger:
    """The calls of one run, and the reservations that keep it within its budget.

    Args:
        budget_usd: What the run may spend; ``None`` for no limit.
        shared: A budget shared with other processes (a batch's), reserved and settled too.
    """

    budget_usd: float | None = None
    calls: list[CallRecord] = field(default_factory=list)
    analysis_hits: list[AnalysisHit] = field(default_factory=list)
    _reserved: dict[int, float] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    shared: ProjectBudget | None = field(default=None, repr=False)
    #: A resumed run's: what its thread spent before, and the budget the user gave
    #: (``budget_usd`` is what is left of it); they only word the refusal.
    spent_before: float = 0.0
    given_usd: float | None = None
    #: The run's copies of the pipeline's models (see ``ModelPipeline.model_for``), kept here
    #: so that they go when the run's ledger goes.
    models: dict[Any, Any] = field(default_factory=dict, repr=False, compare=False)
    # a running sum (added in the order sum() would), so a reservation costs the same on the
    # run's 10,000th call as on its first; reservations are few (calls in flight) and summed
    _spent: float = field(default=0.0, init=False, repr=False)

    def __post_init__(self) -> None:
        check_budget_value(self.budget_usd, source="the run's budget")
        self._spent = sum(call.cost_usd for call in self.calls)

    @property
    def spent_usd(self) -> float:
        """USD settled so far."""
        with self._lock:
            return self._spent

    @property
    def reserved_usd(self) -> float:
        """USD held by calls in flight."""
        with self._lock:
            return sum(self._reserved.values())

    def reserve(self, usd: float) -> Reservation:
        """Hold ``usd`` for a call about to be made, or refuse it.

        Raises:
            BudgetExceededError: Settled spend, open reservations and ``usd`` pass the budget.
        """
        with self._lock:
            if self.budget_usd is not None:
                spent, held = self._spent, sum(self._reserved.values())
                if spent + held + usd > self.budget_usd:
                    raise BudgetExceededError(
                        f"{self._budget_words(spent)}, "
                        f"${held:.6f} held by calls in flight, the next call may cost "
                        f"up to ${usd:.6f}",
                        spent_usd=spent,
                        budget_usd=self.budget_usd,
                    )
            reservation = Reservation(id=next(_ids), usd=usd)
            self._reserved[reservation.id] = usd
        if self.shared is None:
            return reservation
        try:  # outside the lock: a round trip to Redis must not serialise the run's calls
            return dataclasses.replace(reservation, shared=self.shared.reserve(usd))
        except BaseException:
            self.release(reservation)
            raise

    def _budget_words(self, spent: float) -> str:
        """The budget reached and what was spent, before this session too when resumed."""
        if not self.spent_before or self.given_usd is None:
            return f"budget of ${self.budget_usd:g} reached: spent ${spent:.6f}"
        return (
            f"budget of ${self.given_usd:g} reached: spent ${self.spent_before:.6f} before "
            f"this session and ${spent:.6f} in it"
        )

    def release(self, reservation: Reservation) -> None:
        """Give a reservation back unused (idempotent)."""
        with self._lock:
            self._reserved.pop(reservation.id, None)
        if reservation.shared is not None and self.shared is not None:
            self.shared.release(reservation.shared)

    def record(self, call: CallRecord, *, reservation: Reservation | None = None) -> None:
        """Add a finished call, settling its reservation in the same step."""
        with self._lock:
            if reservation is not None:
                self._reserved.pop(reservation.id, None)
            self.calls.append(call)
            self._spent += call.cost_usd
        if reservation is not None and reservation.shared is not None and self.shared is not None:
            self.shared.settle(reservation.shared, call.cost_usd)

    def records(self, *, scope: int | None = None) -> list[CallRecord]:
        """The calls so far (of one node execution when ``scope`` is given)."""
        with self._lock:
            calls = list(self.calls)
        return calls if scope is None else [c for c in calls if c.scope == scope]

    def record_analysis_hit(self, hit: AnalysisHit) -> None:
        """Add a result the analysis cache answered."""
        with self._lock:
            self.analysis_hits.append(hit)

    def analysis_hit_records(self, *, scope: int | None = None) -> list[AnalysisHit]:
        """The analysis-cache hits so far (of one node execution when ``scope`` is given)."""
        with self._lock:
            hits = list(self.analysis_hits)
        return hits if scope is None else [h for h in hits if h.scope == scope]

    def absorb(self, other: RunLedger) -> None:
        """Add ``other``'s calls and analysis-cache hits (a batch's chunk ledger's) to these."""
        calls, hits = other.records(), other.analysis_hit_records()
        with self._lock:
            self.calls.extend(calls)
            self._spent += sum(call.cost_usd for call in calls)
            self.analysis_hits.extend(hits)

    def totals(self) -> dict[str, Any]:
        """Calls, tokens, cost, cache hits and failures so far, as JSON-ready data."""
        with self._lock:
            calls, hits = list(self.calls), len(self.analysis_hits)
        return {**totals_of(calls), "analysis_cache_hits": hits}
