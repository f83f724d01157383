"""The in-process batch budget: chunk ledgers reserve against one cap, with running totals."""

from __future__ import annotations

import pytest

from multiagent.errors import BudgetExceededError
from multiagent.graphs.batch_budget import BatchBudget
from multiagent.models.ledger import RunLedger


def test_chunk_ledgers_share_one_cap_and_keep_only_their_own_calls() -> None:
    budget = BatchBudget(1.0)
    first, second = RunLedger(shared=budget), RunLedger(shared=budget)
    held = first.reserve(0.6)
    with pytest.raises(BudgetExceededError, match=r"budget of \$1.0000 reached"):
        second.reserve(0.5)  # 0.6 held by the other chunk: together they would pass the cap
    first.release(held)
    assert budget.report() == {"cap_usd": 1.0, "spent_usd": 0.0, "held_usd": 0.0}
    kept = second.reserve(0.5)
    assert kept.shared is not None
    budget.settle(kept.shared, 0.4)
    budget.release(kept.shared)  # settled already: nothing more is given back
    assert budget.report() == {"cap_usd": 1.0, "spent_usd": 0.4, "held_usd": 0.0}
    with pytest.raises(BudgetExceededError):
        first.reserve(0.7)
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
