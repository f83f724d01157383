"""The in-process batch budget: chunk ledgers reserve against one cap, with running totals."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from multiagent.errors import BudgetExceededError
from multiagent.graphs.batch_budget import BatchBudget
from multiagent.models.ledger import RunLedger


def test_chunk_ledgers_share_one_cap_and_keep_only_their_own_calls() -> None:
    budget = BatchBudget(1.0)
    first, second = RunLedger(shared=budget), RunLedger(shared=budget)
    held = first.reserve(0.6)
    # 0.6 held by the other chunk: together they would pass the cap, so the call waits for
    # that hold (it may settle for less) rather than stop the batch with its budget unspent
    waiting: list[Any] = []
    waiter = threading.Thread(target=lambda: waiting.append(second.reserve(0.5)))
    waiter.start()
    waiter.join(timeout=0.3)
    assert waiter.is_alive()
    assert waiting == []
    first.release(held)
    waiter.join(timeout=60)
    assert not waiter.is_alive()
    (kept,) = waiting
    assert kept.shared is not None
    budget.settle(kept.shared, 0.4)
    budget.release(kept.shared)  # settled already: nothing more is given back
    assert budget.report() == {"cap_usd": 1.0, "spent_usd": 0.4, "held_usd": 0.0}
    with pytest.raises(BudgetExceededError, match=r"budget of \$1 reached"):
        first.reserve(0.7)  # 0.4 spent + 0.7 pass the cap: refused at once, nothing held
    assert first.records() == []


def test_a_stopped_budget_refuses_every_new_call_and_no_cap_caps_nothing() -> None:
    budget = BatchBudget(None)
    ledger = RunLedger(shared=budget)
    held = ledger.reserve(1_000.0)  # no cap
    budget.stop("the batch was interrupted (Ctrl-C)")
    with pytest.raises(BudgetExceededError, match="interrupted"):
        ledger.reserve(0.0)
    assert held.shared is not None
    budget.settle(held.shared, 0.5)  # a call in flight still settles
    assert budget.report() == {"cap_usd": None, "spent_usd": 0.5, "held_usd": 0.0}


def test_on_an_event_loop_a_call_is_refused_at_once_rather_than_wait() -> None:
    """The holds may be coroutines of the same loop, which cannot settle while it waits."""
    budget = BatchBudget(1.0)
    held = budget.reserve(0.6)

    async def call() -> None:
        budget.reserve(0.5)

    with pytest.raises(BudgetExceededError, match="held by calls in flight"):
        asyncio.run(call())
    budget.release(held)


def test_with_no_hold_left_nothing_is_held_not_a_rounding_residue() -> None:
    budget = BatchBudget(1.0)
    holds = [budget.reserve(usd) for usd in (0.1, 0.2, 0.3)]
    for hold, usd in zip(holds, (0.1, 0.2, 0.3), strict=True):
        budget.settle(hold, usd)
    assert budget.report()["held_usd"] == 0.0
    with pytest.raises(BudgetExceededError, match=r"\$0\.000000 held"):
        budget.reserve(0.5)
