"""One budget for all the chunks of an in-process batch, with constant-time reservations.

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
import threading
from typing import Any

from multiagent._interrupt import check_stop
from multiagent.errors import BudgetExceededError
from multiagent.models.budget import may_wait_for_holds

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
                        f"budget of ${cap:.4f} reached: spent ${self._spent:.6f}, "
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

    def report(self) -> dict[str, Any]:
        """Cap, settled spend and held reservations, JSON-ready."""
        with self._lock:
            return {"cap_usd": self.cap_usd, "spent_usd": self._spent, "held_usd": self._held_total}
