"""The project's budget: a running total of spend across runs and processes, with a daily cap.

A run's own budget lives in its :class:`~multiagent.models.ledger.RunLedger`. The project budget
(``[budget] daily_usd`` in ``multiagent.toml``, or ``MULTIAGENT_BUDGET__DAILY_USD``) is shared by
every run and every process using the same ``MULTIAGENT_HOME``, so it is kept in a store behind
:class:`ProjectBudget`: the embedded one is SQLite (:class:`SQLiteProjectBudget`); a Redis-backed
store (:class:`~multiagent.models.budget_redis.RedisBudget`, chosen by
:func:`open_project_budget` when ``MULTIAGENT_REDIS_URL`` is set) serves several machines.

Reservations are leases of ``budget.lease_s`` seconds (30 by default), renewed while the
process that holds them lives (:mod:`._budget_leases`: one keeper thread per process renews all
its holds every third of the lease, in one transaction). A call as long as it needs keeps its
hold; a process killed between reserving and settling stops renewing, and its reservation stops
counting within one lease. A settled call counts whether or not its lease had expired: the money
was spent.

The SQLite store renews rather than recording each hold's pid and process start and dropping
the holds of processes gone: a pid means nothing across PID namespaces (containers sharing one
``MULTIAGENT_HOME`` on one host, which SQLite's WAL allows), where a live process would look
dead and lose its hold, passing the cap; a lease means the same in every process, needs no
schema change, and behaves as the Redis store does (one setting, one meaning). The price is one
small write every ``lease_s / 3`` while a process holds anything.

Both stores refuse a call only on spend: while the holds of calls in flight alone keep it out,
it waits for them to settle (:func:`reserve_waiting`). Refusing on holds ended runs that
started together as ``budget_exceeded`` with most of the day's money unspent (four runs at
once on a $0.0025 cap: one refused, $0.00086 finally spent).
"""

from __future__ import annotations

import asyncio
import functools
import math
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from multiagent._interrupt import wait_or_stop
from multiagent._sqlite import ensure_wal
from multiagent.errors import BudgetExceededError
from multiagent.models._budget_leases import LeaseKeeper

if TYPE_CHECKING:
    from multiagent.policies import Settings

#: File of the embedded project budget, under ``MULTIAGENT_HOME``.
BUDGET_FILE = "budget.sqlite"


class ProjectBudget(Protocol):
    """Spend shared by every run of the project, with atomic reservations."""

    def reserve(self, usd: float) -> str:
        """Hold ``usd`` for a call; return the reservation's id.

        Raises:
            BudgetExceededError: The period's spend, open reservations and ``usd`` pass the cap.
        """
        ...

    def settle(self, reservation: str, usd: float) -> None:
        """Turn a reservation into spend of ``usd`` (the call's real cost)."""
        ...

    def release(self, reservation: str) -> None:
        """Give a reservation back unused."""
        ...

    def report(self) -> dict[str, Any]:
        """The current period's cap, settled spend and held reservations, JSON-ready."""
        ...


def may_wait_for_holds() -> bool:
    """Whether a budget shared by many calls may make a call wait for the holds of calls in
    flight instead of refusing it: not on an asyncio event loop's thread (a coroutine's call
    made synchronously), where those calls may be coroutines of the same loop that cannot
    settle while it waits. (A batch's budgets and the Redis ones wait; see each.)"""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return True
    return False


class HeldBack(Exception):
    """A reservation that fits once the holds of calls in flight settle."""


#: First and longest pause of a call waiting for other calls' holds to settle.
HOLD_WAIT_S = (0.01, 0.25)


def reserve_waiting(reserve_once: Callable[[], str]) -> str:
    """``reserve_once()`` until it holds: while it raises :class:`HeldBack` (only the holds of
    calls in flight keep the call out; they always end, by settling, releasing or a lease
    running out), wait, 10 ms doubling to 250 ms, and ask again.

    Raises:
        BudgetExceededError: What ``reserve_once`` raises once spend alone leaves no room.
        StopRequested: Ctrl-C asked to stop while the call waited.
    """
    pause = HOLD_WAIT_S[0]
    while True:
        try:
            return reserve_once()
        except HeldBack:
            wait_or_stop(pause)
            pause = min(2 * pause, HOLD_WAIT_S[1])


def _today() -> str:
    return datetime.now(UTC).date().isoformat()


_SCHEMA = """
CREATE TABLE IF NOT EXISTS spend (
    id TEXT PRIMARY KEY,
    period TEXT NOT NULL,
    usd REAL NOT NULL,
    settled INTEGER NOT NULL,
    expires REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS spend_period ON spend (period);
"""


class SQLiteProjectBudget:
    """The project budget in one SQLite file; reserve and settle are ``BEGIN IMMEDIATE``
    transactions, so processes sharing the file never admit more than the cap together.

    Args:
        path: The SQLite file.
        daily_usd: The cap per UTC day.
        lease_s: How long a reservation holds budget once its process stops renewing it.
        clock: Wall-clock seconds (leases must mean the same in every process).
        period: The current period's key (default: the UTC date).
    """

    def __init__(
        self,
        path: Path,
        *,
        daily_usd: float,
        lease_s: float = 30.0,
        clock: Callable[[], float] = time.time,
        period: Callable[[], str] = _today,
    ) -> None:
        self.path = path
        self.daily_usd = daily_usd
        self.lease_s = lease_s
        self._clock = clock
        self._period = period
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        self._leases: LeaseKeeper[str] = LeaseKeeper(self._renew, name="budget-sqlite-leases")

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(
                self.path, timeout=30.0, isolation_level=None, check_same_thread=False
            )
            ensure_wal(db)
            db.executescript(_SCHEMA)
            self._db = db
        return self._db

    def _sums(self, db: sqlite3.Connection, period: str, now: float) -> tuple[float, float]:
        row = db.execute(
            "SELECT COALESCE(SUM(CASE WHEN settled THEN usd END), 0),"
            " COALESCE(SUM(CASE WHEN NOT settled AND expires >= ? THEN usd END), 0)"
            " FROM spend WHERE period = ?",
            (now, period),
        ).fetchone()
        return float(row[0]), float(row[1])

    def reserve(self, usd: float) -> str:
        """Hold ``usd`` for a call (see :class:`ProjectBudget`). While only the holds of calls
        in flight keep ``usd`` out, wait for them to settle, as the Redis store does (a call on
        an event loop's thread is refused at once: :func:`may_wait_for_holds`).

        Raises:
            BudgetExceededError: What is spent leaves no room for ``usd`` (or holds do, on an
                event loop's thread).
            StopRequested: Ctrl-C asked to stop while the call waited.
        """
        return reserve_waiting(lambda: self._reserve_once(usd, wait=may_wait_for_holds()))

    def try_reserve(self, usd: float) -> str | None:
        """:meth:`reserve` without waiting: ``None`` while only holds keep ``usd`` out.

        Raises:
            BudgetExceededError: What is spent leaves no room for ``usd``.
        """
        try:
            return self._reserve_once(usd, wait=True)
        except HeldBack:
            return None

    def _reserve_once(self, usd: float, *, wait: bool) -> str:
        rid = uuid.uuid4().hex
        with self._lock:
            db = self._conn()
            db.execute("BEGIN IMMEDIATE")
            try:
                now, period = self._clock(), self._period()
                db.execute("DELETE FROM spend WHERE NOT settled AND expires < ?", (now,))
                spent, held = self._sums(db, period, now)
                if spent + held + usd > self.daily_usd:
                    if wait and held > 0 and spent + usd <= self.daily_usd:
                        raise HeldBack  # rolled back below; asked again once holds settle
                    raise BudgetExceededError(
                        f"project budget of ${self.daily_usd:.6f} for {period} reached: "
                        f"spent ${spent:.6f}, ${held:.6f} held, the next call may cost up "
                        f"to ${usd:.6f}",
                        spent_usd=spent,
                        budget_usd=self.daily_usd,
                        daily=True,
                    )
                db.execute(
                    "INSERT INTO spend VALUES (?, ?, ?, 0, ?)",
                    (rid, period, usd, now + self.lease_s),
                )
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        self._leases.hold(rid, self.lease_s)
        return rid

    def settle(self, reservation: str, usd: float) -> None:
        """Record the call's real cost in place of its reservation."""
        self._leases.drop([reservation])
        with self._lock:
            db = self._conn()
            db.execute("BEGIN IMMEDIATE")
            try:
                # an expired lease was deleted: the spend still happened, in today's period
                db.execute(
                    "INSERT INTO spend VALUES (?, ?, ?, 1, 0) ON CONFLICT(id) DO UPDATE"
                    " SET usd = excluded.usd, settled = 1",
                    (reservation, self._period(), usd),
                )
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def release(self, reservation: str) -> None:
        """Delete an unsettled reservation."""
        self._leases.drop([reservation])
        with self._lock:
            self._conn().execute("DELETE FROM spend WHERE id = ? AND NOT settled", (reservation,))

    def _renew(self, held: list[tuple[str, float]]) -> None:
        """Push back the leases of this process's holds (one that expired stays expired)."""
        with self._lock:
            db = self._conn()
            db.execute("BEGIN IMMEDIATE")
            try:
                now = self._clock()
                db.executemany(
                    "UPDATE spend SET expires = ? WHERE id = ? AND NOT settled AND expires >= ?",
                    [(now + lease_s, rid, now) for rid, lease_s in held],
                )
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def report(self) -> dict[str, Any]:
        """Cap, spend and holds of the current period."""
        period = self._period()  # read once: the figures and their label are the same day's
        with self._lock:
            if not self.path.exists():
                return {
                    "period": period,
                    "daily_usd": self.daily_usd,
                    "spent_usd": 0.0,
                    "held_usd": 0.0,
                }
            spent, held = self._sums(self._conn(), period, self._clock())
        return {
            "period": period,
            "daily_usd": self.daily_usd,
            "spent_usd": round(spent, 8),
            "held_usd": round(held, 8),
        }

    def close(self) -> None:
        """Close the connection (a new one opens on next use)."""
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None


@functools.cache
def project_budget(home: Path, *, daily_usd: float, lease_s: float) -> SQLiteProjectBudget:
    """The process's store of the project budget under ``home`` (one connection per process)."""
    if not math.isfinite(daily_usd) or daily_usd < 0:
        raise ValueError(f"daily budget must be finite and at least 0, got {daily_usd}")
    return SQLiteProjectBudget(home.resolve() / BUDGET_FILE, daily_usd=daily_usd, lease_s=lease_s)


def open_project_budget(settings: Settings) -> ProjectBudget | None:
    """The project budget's store for ``settings``: Redis when ``MULTIAGENT_REDIS_URL`` is set
    (shared by every machine), else SQLite under ``MULTIAGENT_HOME``; ``None`` with no cap.

    Raises:
        UsageError: Redis is configured but does not answer (one line naming the URL).
    """
    budget = settings.profile.budget
    if budget.daily_usd is None:
        return None
    if settings.redis_url:
        from multiagent.models.budget_redis import redis_project_budget

        return redis_project_budget(
            settings.redis_url, daily_usd=budget.daily_usd, lease_s=budget.lease_s,
            degraded_fraction=budget.degraded_fraction,
        )  # fmt: skip
    return project_budget(settings.home, daily_usd=budget.daily_usd, lease_s=budget.lease_s)
