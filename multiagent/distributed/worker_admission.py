"""Item admission of a queued batch with a budget: a worker starts an item only once Redis holds
the item's whole worst case.

Each call used to reserve on its own, so under a tight budget N workers started many items whose
first validators answered and whose others were then refused: the budget went on half-validated
items, worth nothing. As a local batch does (:class:`~multiagent.graphs.batch_budget.
ItemAdmission`), an item (a distinct text) now starts only when the batch's budget can finish
it: one reservation in Redis of its validators' calls, each at what it would reserve
(:func:`~multiagent.graphs.batch_budget.item_worst_case`), admitted by the same atomic script
as every reservation (spent, what items in flight hold, and this one within the cap). It is a
lease like the others, renewed while the worker lives, so a SIGKILLed worker's item hold ends
within ``budget.lease_s``. While only the holds of items in flight keep the next item out, the
slot waits for them to settle (they usually cost a fraction of their worst case); once what is
spent alone leaves no room, the item is refused and the batch stops as ``budget_exceeded`` with
the rest unfinished, to be finished under a larger budget.

The item's calls draw on its hold instead of reserving (:class:`HeldItems`, a
:class:`~multiagent.models.budget.ProjectBudget` for the chunk's ledger): each is checked in
the process against what the hold has left and sent, as a settlement, as spend taken off the
hold (:meth:`~multiagent.models.budget_redis.RedisBudget.draw`), so a killed worker's paid calls
still count; the item's end closes the hold. A chunk's items are admitted together while each
fits at once; the ones that must wait run after them.
"""

from __future__ import annotations

import uuid
from collections import deque
from collections.abc import Callable
from typing import Any

from multiagent.errors import BudgetExceededError
from multiagent.graphs.batch_budget import BatchBudget, item_refusal
from multiagent.models.budget_redis import NANO, RedisBudget, to_nano
from multiagent.nodes.state import ValidationItem

#: A picodollar over a hold's total: only absorbs float error in summing its calls' worst cases.
_EPSILON_USD = 1e-12


class HeldItems:
    """The Redis holds of items admitted together, which their calls draw on.

    Args:
        budget: The batch's budget in Redis.
        holds: Each admitted item's reservation and its amount in nano-USD.
    """

    def __init__(self, budget: RedisBudget, holds: list[tuple[str, int]]) -> None:
        self._redis = budget
        self._ids = [rid for rid, _ in holds]
        self._left = [amount for _, amount in holds]  # nano-USD each hold has left
        self._local = BatchBudget(sum(amount for _, amount in holds) / NANO + _EPSILON_USD)
        self._closed = False

    def reserve(self, usd: float) -> str:
        """Check a call against what the holds have left (in this process: no round trip).

        Raises:
            BudgetExceededError: The call was not in the items' worst case (nothing held for it).
        """
        return self._local.reserve(usd)

    def settle(self, reservation: str, usd: float) -> None:
        """Count a call's cost, drawn from the first holds with something left."""
        self._local.settle(reservation, usd)
        amount = to_nano(usd)
        if amount == 0:  # counted as a call all the same, as a reservation's settlement is
            self._redis.draw(self._ids[0], f"{reservation}.0", 0.0)
            return
        parts = 0
        for n, rid in enumerate(self._ids):
            # the last hold takes what is left over: a call beyond the worst case is still paid
            take = amount if n == len(self._ids) - 1 else min(amount, self._left[n])
            if take <= 0:
                continue
            self._left[n] -= take
            amount -= take
            draw_id = f"{reservation}.{uuid.uuid4().hex[:8]}"
            self._redis.draw(rid, draw_id, take / NANO, part=parts > 0)  # one call, however split
            parts += 1
            if amount <= 0:
                break

    def release(self, reservation: str) -> None:
        """A call that ends unpaid gives its check back."""
        self._local.release(reservation)

    def report(self) -> dict[str, Any]:
        """What the items' calls spent and hold, JSON-ready."""
        return self._local.report()

    def close(self) -> None:
        """The items ended: give back what their holds have left (sent after their draws)."""
        if self._closed:
            return
        self._closed = True
        for rid in self._ids:
            self._redis.end_hold(rid)


def admit_items(
    budget: RedisBudget,
    groups: deque[list[ValidationItem]],
    *,
    worst_case: Callable[[str], float],
) -> tuple[HeldItems, list[ValidationItem]]:
    """Hold the worst case of the first groups (distinct texts, with their duplicates) of
    ``groups`` and take them off it: the first one waits while only holds keep it out, the
    next ones are taken while each fits at once.

    Raises:
        BudgetExceededError: What is spent leaves no room for the first group (its message the
            local batch's: the room left cannot finish the next item). Nothing is held.
        StopRequested: Ctrl-C asked to stop while the first one waited.
    """
    holds: list[tuple[str, int]] = []
    items: list[ValidationItem] = []
    try:
        _take(budget, groups, worst_case=worst_case, holds=holds, items=items)
    except BaseException:
        HeldItems(budget, holds).close()  # a live worker would renew them for ever
        raise
    return HeldItems(budget, holds), items


def _take(
    budget: RedisBudget,
    groups: deque[list[ValidationItem]],
    *,
    worst_case: Callable[[str], float],
    holds: list[tuple[str, int]],
    items: list[ValidationItem],
) -> None:
    """The loop of :func:`admit_items`, adding to ``holds`` and ``items``."""
    while groups:
        amount = to_nano(worst_case(groups[0][0]["text"]))
        try:
            rid = budget.reserve(amount / NANO) if not holds else budget.try_reserve(amount / NANO)
        except BudgetExceededError as exc:
            if holds:  # the next item waits for a later round, which is refused the same way
                break
            if budget.degraded:  # the local reserve's own refusal says what it is
                raise
            room = max(0.0, exc.budget_usd - exc.spent_usd)
            raise BudgetExceededError(
                item_refusal(cap=exc.budget_usd, spent=exc.spent_usd, room=room,
                             worst=amount / NANO),
                spent_usd=exc.spent_usd, budget_usd=exc.budget_usd,
            ) from None  # fmt: skip
        if rid is None:
            break
        holds.append((rid, amount))
        items.extend(groups.popleft())
