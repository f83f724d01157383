"""One budget for all the chunks of an in-process batch, with constant-time reservations, and
the admission of the batch's items against it (:class:`ItemAdmission`).

The chunks of a batch run in parallel and must not overspend together, so they reserve against
one budget. Sharing one :class:`~multiagent.models.ledger.RunLedger` did that, but a run ledger
keeps every call and sums (and copies) them on each reservation and usage read: per call the
work grew with the batch, quadratic over it. Here each chunk has a ledger of its own calls only,
whose reservations go to this budget (a :class:`~multiagent.models.budget.ProjectBudget`, as
the Redis budget is for queued batches), which keeps running totals. A stopped budget (the
batch was interrupted) refuses every new call, so the chunks running end at their next call.

As the Redis budget does, a call that only the holds of calls in flight keep out waits for them
to settle, and is refused once settled spend leaves no room for its worst case: the chunks'
calls each hold their worst case, several times what they cost, and refusing on holds stopped a
batch as ``budget_exceeded`` with much of its budget unspent.
"""

from __future__ import annotations

import itertools
import math
import threading
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from multiagent._interrupt import check_stop
from multiagent.errors import BudgetExceededError, UsageError
from multiagent.models.budget import may_wait_for_holds
from multiagent.models.ledger import RunLedger
from multiagent.nodes.context import WorkflowContext
from multiagent.nodes.state import ValidationItem
from multiagent.nodes.validator import text_key, verdict_worst_case_usd

#: How often a call waiting for holds looks for Ctrl-C.
_POLL_S = 0.1


class BatchBudget:
    """A cap in USD shared by a batch's chunk ledgers; running totals, O(1) per call.

    ``cap_usd=None`` caps nothing; the budget still counts, and :meth:`stop` still ends the
    batch's calls.
    """

    def __init__(self, cap_usd: float | None) -> None:
        self.cap_usd = cap_usd
        self._stopped: str | None = None
        self._spent = 0.0
        self._held: dict[str, float] = {}
        self._held_total = 0.0
        self._ids = itertools.count()
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)  # a hold settled or went, or a stop

    def reserve(self, usd: float) -> str:
        """Hold ``usd`` for a call; while only holds keep it out, wait for them; refuse it when
        settled spend and ``usd`` pass the cap.

        Raises:
            BudgetExceededError: The batch's budget would be passed, or the batch was stopped.
            StopRequested: Ctrl-C asked to stop while the call waited.
        """
        with self._changed:
            while True:
                if self._stopped is not None:
                    raise BudgetExceededError(
                        self._stopped, spent_usd=self._spent, budget_usd=self.cap_usd or 0.0
                    )
                cap = self.cap_usd
                if cap is None or self._spent + self._held_total + usd <= cap:
                    break
                if not (self._held and self._spent + usd <= cap and may_wait_for_holds()):
                    raise BudgetExceededError(
                        f"budget of ${cap:g} reached: spent ${self._spent:.6f}, "
                        f"${self._held_total:.6f} held by calls in flight, the next call may "
                        f"cost up to ${usd:.6f}",
                        spent_usd=self._spent,
                        budget_usd=cap,
                    )
                self._changed.wait(_POLL_S)
                check_stop()
            reservation = str(next(self._ids))
            self._held[reservation] = usd
            self._held_total += usd
            return reservation

    def settle(self, reservation: str, usd: float) -> None:
        """Turn a reservation into spend of ``usd``."""
        with self._changed:
            self._give_back(reservation)
            self._spent += usd
            self._changed.notify_all()

    def release(self, reservation: str) -> None:
        """Give a reservation back unused (idempotent)."""
        with self._changed:
            self._give_back(reservation)
            self._changed.notify_all()

    def _give_back(self, reservation: str) -> None:
        """Drop ``reservation``'s hold (the lock is held). With none left the total is 0
        exactly: subtracting floats left ``-0.000000`` held in the refusal's message."""
        self._held_total -= self._held.pop(reservation, 0.0)
        if not self._held:
            self._held_total = 0.0

    def stop(self, reason: str) -> None:
        """Refuse every reservation from now on, for ``reason``; calls in flight still settle."""
        with self._changed:
            self._stopped = reason
            self._changed.notify_all()

    @property
    def spent_usd(self) -> float:
        """USD settled so far."""
        with self._lock:
            return self._spent

    def report(self) -> dict[str, Any]:
        """Cap, settled spend and held reservations, JSON-ready."""
        with self._lock:
            return {"cap_usd": self.cap_usd, "spent_usd": self._spent, "held_usd": self._held_total}


def item_worst_case(context: WorkflowContext, validators: Sequence[str]) -> Callable[[str], float]:
    """The worst case of validating one text: each validator's verdict call at what it reserves
    (:func:`~multiagent.nodes.validator.verdict_worst_case_usd`). Local and queued batches
    admit items on it."""
    agents = [context.agents[name] for name in validators]
    return lambda text: sum(verdict_worst_case_usd(context, agent, text) for agent in agents)


def completing_worst_case(
    context: WorkflowContext, validators: Sequence[str], asked: Mapping[str, Sequence[str]]
) -> Callable[[str], float]:
    """:func:`item_worst_case`, but a text being completed (its key in ``asked``) costs at
    worst the calls of the validators asked again (those that failed), not all of them."""
    return lambda text: item_worst_case(context, asked.get(text_key(text), validators))(text)


def item_refusal(*, cap: float, spent: float, room: float, worst: float) -> str:
    """Why a batch starts no further item: the room left cannot finish the next one."""
    return (
        f"budget of ${cap:g} reached: spent ${spent:.6f}, the ${room:.6f} left cannot "
        f"finish the next item (it may cost up to ${worst:.6f})"
    )


def resume_refusal(
    *, batch_id: str, budget: float, spent: float, held: float, item: str, worst: float,
    least: float,
) -> str:  # fmt: skip
    """Why a resume under ``budget`` is refused: what it leaves after what the batch spent and
    holds cannot cover the worst case of its next item, so it would stop at once having run
    nothing. ``least`` is the smallest total that lets that item run."""
    room = max(0.0, budget - spent - held)
    return (
        f"--budget {budget} USD cannot run another item of batch {batch_id!r}: "
        f"${spent:.6f} spent + ${held:.6f} held leave ${room:.6f}, and its next item "
        f"{item!r} may cost up to ${worst:.6f}; give at least --budget {least_text(least)}"
    )


def least_text(usd: float) -> str:
    """A total in USD to the nano-USD, as typed on the command line (no trailing zeros)."""
    return f"{usd:.9f}".rstrip("0").rstrip(".")


def check_resume_budget(
    *, batch_id: str, budget: float, spent: float, item: ValidationItem, worst: float
) -> None:
    """Refuse to resume a local batch under ``budget`` when, after ``spent``, what is left
    cannot cover ``worst``, the worst case of its next item: :class:`ItemAdmission` would
    admit nothing, on the same test.

    Raises:
        UsageError: One line naming the budget, the spend, the item's worst case and the
            least budget that lets it run.
    """
    if worst <= max(0.0, budget - spent):  # the room ItemAdmission.take compares with
        return
    least = math.ceil((spent + worst) * 1e9) / 1e9
    while worst > least - spent:  # a float below the sum: the next nano-USD up
        least += 1e-9
    raise UsageError(
        resume_refusal(batch_id=batch_id, budget=budget, spent=spent, held=0.0,
                       item=item["id"], worst=worst, least=least)
    )  # fmt: skip


class ItemAdmission:
    """Which items a capped batch may start: those whose worst case the budget still covers.

    Chunks running in parallel each reserve call by call, so before this a tight budget was
    spread over many items at once, each with some validators answered and the others
    refused: the batch stopped with every item part-paid and none finished. Here a chunk is
    given an item (a distinct text, with its duplicates) only while the budget's *room* covers
    the item's worst case (its validators' calls, each at what it reserves): room is the cap,
    less settled spend, less what the chunks running may still spend on the items they were
    given (their earmark, the sum of those worst cases, less what they spent). So the items
    started can be finished, whatever the concurrency; the calls still reserve as before, so
    settled spend never exceeds the cap. Without a cap every item is admitted, and nothing
    is estimated.

    Args:
        budget: The batch's budget.
        worst_case: The worst case of validating one text.
    """

    def __init__(self, budget: BatchBudget, worst_case: Callable[[str], float]) -> None:
        self._budget = budget
        self._worst_case = worst_case
        self._earmarks: dict[int, tuple[float, RunLedger]] = {}
        self._ids = itertools.count()
        #: Why the last :meth:`take` left the next item out, ``""`` when it did not.
        self.refusal = ""

    def room(self) -> float | None:
        """What the budget can still admit (``None``: no cap)."""
        cap = self._budget.cap_usd
        if cap is None:
            return None
        outstanding = sum(
            max(0.0, earmark - ledger.spent_usd) for earmark, ledger in self._earmarks.values()
        )
        return cap - self._budget.spent_usd - outstanding

    def take(
        self, groups: deque[list[ValidationItem]], *, most: int, ledger: RunLedger
    ) -> tuple[int, list[ValidationItem]]:
        """Take up to ``most`` groups (distinct texts) from the front of ``groups``, in order,
        while their worst cases fit the room; earmark them for the chunk recording into
        ``ledger``. Returns the earmark's id (for :meth:`release`) and the items taken (none
        when the next does not fit: :attr:`refusal` says why)."""
        room = self.room()
        taken: list[ValidationItem] = []
        earmark, count = 0.0, 0
        self.refusal = ""
        while groups and count < most:
            if room is not None:
                worst = self._worst_case(groups[0][0]["text"])
                if earmark + worst > room:
                    if not taken:
                        self.refusal = item_refusal(
                            cap=self._budget.cap_usd or 0.0,
                            spent=self._budget.spent_usd, room=room, worst=worst,
                        )  # fmt: skip
                    break
                earmark += worst
            taken.extend(groups.popleft())
            count += 1
        mark = next(self._ids)
        if taken:
            self._earmarks[mark] = (earmark, ledger)
        return mark, taken

    def release(self, mark: int) -> None:
        """The chunk of earmark ``mark`` ended: what it spent is settled, the rest is free."""
        self._earmarks.pop(mark, None)
