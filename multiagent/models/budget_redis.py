"""Budgets shared by every process through Redis: the project's daily cap and a run's,
thread's or batch's total, reserved and settled by atomic Lua scripts (:mod:`._budget_lua`).

Chosen when ``MULTIAGENT_REDIS_URL`` is set (:func:`multiagent.models.budget.open_project_budget`,
and the queue workers for a batch's ``--budget``). Reservations are short leases
(``budget.lease_s``) timed by the Redis server and renewed while the process holding them
lives: one ``RENEW`` script per Redis connection every third of the lease covers all the
process's holds (:mod:`._budget_leases`). A call as long as it needs keeps its hold; a process
killed mid-call stops renewing, and its holds are given back within one lease.

**One round trip per call.** A settlement is not sent on its own: it rides with the process's
next reservation, or is sent within a few tens of milliseconds by a flusher thread when none
follows (:mod:`._budget_pending`). Until it arrives its reservation stays held, so the cap
holds; it is exact, counted once by its id.

**An item holds, its calls draw.** A queued batch's worker reserves an item's whole worst case
before it starts the item (:mod:`multiagent.distributed.worker_admission`); the item's calls then
spend from that hold (:meth:`RedisBudget.draw`, sent as settlements are) instead of reserving,
and the item's end gives back what is left (:meth:`RedisBudget.end_hold`).

**A call waits for holds, and is refused only by spend.** When what is spent, what calls in
flight hold and the new call's worst case pass the cap, but what is spent and the worst case
alone do not, the call waits for the holds to settle (polling, 10 ms doubling to 250 ms, a
Ctrl-C still stops it) and asks again; it is refused once settled spend alone leaves no room.
A worker's queued calls reserve before they wait at its gate, and calls hold their worst case
while at the provider, so refusing on holds stopped a batch as ``budget_exceeded`` with much of
its budget unspent. Holds always end: a call settles or releases, and a killed process's hold
ends with its lease, within ``budget.lease_s`` of its death. A call made on an event loop's
thread is refused at once, as before: the holds it would wait for may belong to coroutines of
that same loop
(:func:`~multiagent.models.budget.may_wait_for_holds`). A run's own
:class:`~multiagent.models.ledger.RunLedger` still refuses on holds: its refusal ends only that
run, which ``--resume`` continues.

**When Redis goes away mid-run** the budget degrades instead of failing every call: it says so
once on stderr, counts it (``budget_redis_lost_total``) and keeps admitting calls from a local
reserve of ``degraded_fraction`` of what was left of the shared budget when it was last seen
(nothing, if it was never seen). Spend settled meanwhile is kept and sent when Redis answers
again (checked at most every :data:`PROBE_S`); each settlement carries its reservation id and
the server counts an id once, so a settlement resent after a lost reply is not charged twice.
The overshoot this allows is bounded by the local reserve of each process cut off.
Budgets hold money: run the Redis that keeps them with persistence (AOF), so a restart keeps
what was spent.
"""

from __future__ import annotations

import functools
import math
import os
import socket
import sys
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from multiagent._metrics import get_metrics
from multiagent._redis import open_redis
from multiagent.errors import BudgetExceededError, ConfigError
from multiagent.models._budget_leases import LeaseKey, lease_keeper
from multiagent.models._budget_lua import RELEASE, REPORT, RESERVE, SETTLE
from multiagent.models._budget_pending import BATCH, PendingSettlements, Settlement
from multiagent.models.budget import HeldBack, may_wait_for_holds, reserve_waiting

PREFIX = "multiagent:budget:"
#: Nano-USD per USD: amounts in Redis are integers.
NANO = 1_000_000_000
#: Seconds between attempts to reach Redis again while degraded.
PROBE_S = 1.0
#: Seconds a command may wait for its reply before Redis counts as lost.
COMMAND_TIMEOUT_S = 2.0
#: How long a daily budget's keys outlive their last write; a run's or batch's.
DAILY_TTL_S = 2 * 86400
RUN_TTL_S = 30 * 86400
_LOST = (RedisConnectionError, RedisTimeoutError, ConnectionError, TimeoutError)


def to_nano(usd: float) -> int:
    """``usd`` in nano-USD, rounded up (a reservation never falls short)."""
    return math.ceil(round(usd * NANO, 3))


def budget_key(kind: str, name: str) -> str:
    """The key of the shared budget of a ``batch``, ``thread`` or ``run`` called ``name``."""
    return f"{PREFIX}{kind}:{name}"


def _owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _period_date(period: str) -> str:
    """``d20000`` (days since 1970 on the server's clock) as an ISO date."""
    if not period.startswith("d"):
        return period
    return (datetime(1970, 1, 1, tzinfo=UTC) + timedelta(days=int(period[1:]))).date().isoformat()


class RedisBudget:
    """A budget every process reserves against together (see the module docstring).

    Args:
        client: A Redis client (its replies decoded).
        key: The budget's key (``budget_key(...)``, or the project prefix).
        cap_usd: The cap; ``None`` to use the one stored with the budget (a batch's).
        daily: A new budget each UTC day of the server's clock (the project's cap).
        lease_s: How long a reservation holds budget once its process stops renewing it
            (renewed every third of it while held: :mod:`._budget_leases`).
        degraded_fraction: Share of what was left that this process may spend alone while
            Redis is unreachable.
        label: How messages name the budget (``project budget``, ``batch budget``).
    """

    def __init__(
        self,
        client: redis.Redis,
        *,
        key: str,
        cap_usd: float | None,
        daily: bool = False,
        lease_s: float = 30.0,
        degraded_fraction: float = 0.1,
        label: str = "shared budget",
    ) -> None:
        self.client = client
        self.key = key
        self.cap_nano = None if cap_usd is None else to_nano(cap_usd)
        self.daily = daily
        self.lease_s = lease_s
        self.lease_ms = max(1, int(lease_s * 1000))
        self._leases = lease_keeper(client)
        self.ttl_s = DAILY_TTL_S if daily else RUN_TTL_S
        self.fraction = degraded_fraction
        self.label = label
        self.owner = _owner()
        self._scripts = {
            name: client.register_script(text)
            for name, text in (("reserve", RESERVE), ("settle", SETTLE), ("release", RELEASE),
                               ("report", REPORT))
        }  # fmt: skip
        self._lock = threading.Lock()
        self._period = ""
        self._left: int | None = None  # nano-USD left at the last reply
        self.degraded = False
        self._allowance = 0
        self._local: dict[str, int] = {}  # local reservations while degraded
        self._local_used = 0
        self._pending = PendingSettlements(self._flush_late)  # settled, not yet in Redis
        self._orphans: list[str] = []  # "<base>|<id>" of reservations whose reply was lost
        self._next_probe = 0.0
        self.lost = 0  # times Redis was lost
        self.local_calls = 0  # calls admitted from the local reserve

    # -- the ProjectBudget protocol -------------------------------------------------------

    def reserve(self, usd: float) -> str:
        """Hold ``usd`` for a call; return the reservation's id. While only the holds of calls
        in flight keep ``usd`` out, wait for them to settle (see the module docstring).

        Raises:
            BudgetExceededError: The budget cannot cover ``usd`` besides what is spent (or, with
                Redis lost, the local reserve cannot cover it besides what it holds).
            StopRequested: Ctrl-C asked to stop while the call waited.
        """
        amount = to_nano(usd)
        return reserve_waiting(lambda: self._reserve_once(amount))

    def try_reserve(self, usd: float) -> str | None:
        """:meth:`reserve` without waiting: ``None`` while only holds keep ``usd`` out.

        Raises:
            BudgetExceededError: What is spent leaves no room for ``usd``.
        """
        try:
            return self._reserve_once(to_nano(usd))
        except HeldBack:
            return None

    def draw(self, hold: str, draw_id: str, usd: float, *, part: bool = False) -> None:
        """Count ``usd`` spent by a call that ``hold`` (an admitted item's reservation) covers,
        taking it off the hold: no round trip, it travels as settlements do (once per
        ``draw_id``). ``part``: a later part of a call drawn from several holds (its spend
        counts, not as another call)."""
        amount = to_nano(usd)
        draw_id = f"{draw_id}+" if part else draw_id
        with self._lock:
            if hold in self._local:  # spent from what the local hold kept aside
                self._local[hold] -= min(amount, self._local[hold])
        base, rid = self._split(hold)
        self._pending.add((f"{hold}>{draw_id}", base, f"{rid}>{draw_id}", amount))
        if self.degraded:
            self._usable()

    def end_hold(self, hold: str) -> None:
        """End ``hold``, sent after its draws: what they did not take is given back."""
        with self._lock:
            if hold in self._local:
                self._local_used -= self._local.pop(hold)
                return
        base, rid = self._split(hold)
        self._pending.add((f"{hold}>", base, f"{rid}>", 0))

    def _reserve_once(self, amount: int) -> str:
        if self._usable():
            rid = uuid.uuid4().hex
            along = self._pending.take()  # settlements ride with the reservation
            try:
                reply = self._scripts["reserve"](
                    keys=[self.key, *(s[1] for s in along)],
                    args=[rid, amount, self.lease_ms, "" if self.cap_nano is None else
                          self.cap_nano, self.owner, self.ttl_s, "1" if self.daily else "0",
                          len(along), *_pairs(along)],
                )  # fmt: skip
            except _LOST as exc:
                # the server may have made the hold before the reply was lost: give it back
                # when Redis answers again, rather than let it wait out its lease
                self._pending.restore(along)
                with self._lock:
                    self._orphans.append(self._split(f"{self._period}/{rid}")[0] + "|" + rid)
                self._lose(exc)
            else:
                self._leases.drop(_keys(along))  # settled: nothing left to renew
                return self._admitted(rid, amount, reply)
        return self._reserve_locally(amount)

    def settle(self, reservation: str, usd: float) -> None:
        """Count ``usd`` spent in place of the reservation (once, even if sent twice)."""
        amount = to_nano(usd)
        with self._lock:
            if reservation in self._local:
                self._local_used += amount - self._local.pop(reservation)
        self._pending.add((reservation, *self._split(reservation), amount))
        if self.degraded:
            self._usable()  # a probe, at most once per PROBE_S: sends what is kept when back

    def release(self, reservation: str) -> None:
        """Give a reservation back unused (a lost Redis lets its lease run out)."""
        with self._lock:
            if reservation in self._local:
                self._local_used -= self._local.pop(reservation)
                return
        base, rid = self._split(reservation)
        self._leases.drop([(base, rid)])  # a lost Redis: the hold ends with its lease
        if self._usable():
            try:
                self._scripts["release"](keys=[base], args=[rid])
            except _LOST as exc:
                self._lose(exc)

    def report(self) -> dict[str, Any]:
        """Cap, spend, holds (in total and per process) and this process's degraded state."""
        base: dict[str, Any] = {
            "store": "redis", "key": self.key, "degraded": self.degraded,
            "redis_lost": self.lost, "local_calls": self.local_calls,
            "pending_settlements": len(self._pending),
        }  # fmt: skip
        try:
            if not self.degraded:
                self._flush()  # this process's settlements count in what it reports
            reply = self._scripts["report"](keys=[self.key], args=["1" if self.daily else "0"])
        except _LOST as exc:
            self._lose(exc)
            return base
        cap = int(reply[1])
        if cap < 0 and self.cap_nano is not None:  # no call yet today: the configured cap
            cap = self.cap_nano
        owners = {str(reply[i]): int(reply[i + 1]) / NANO for i in range(6, len(reply), 2)}
        figures = {
            "period": _period_date(str(reply[0])) if self.daily else None,
            "daily_usd" if self.daily else "budget_usd": None if cap < 0 else cap / NANO,
            "spent_usd": int(reply[2]) / NANO,
            "held_usd": int(reply[3]) / NANO,
            "settled_calls": int(reply[4]),
            "expired_leases": int(reply[5]),
            "held_by_process": owners,
        }
        return figures | base

    # -- Redis and the local reserve -----------------------------------------------------

    def _split(self, reservation: str) -> tuple[str, str]:
        """The base key a reservation lives under, and its id there."""
        period, _, rid = reservation.rpartition("/")
        period = period or self._period
        return (f"{self.key}:{period}" if self.daily and period else self.key), rid

    def _admitted(self, rid: str, amount: int, reply: list[Any]) -> str:
        admitted, period = int(reply[0]), str(reply[1])
        spent, held, cap = int(reply[2]), int(reply[3]), int(reply[4])
        with self._lock:
            self._period = period
            self._left = max(0, cap - spent - held) if admitted >= 0 else None
        if admitted < 0:
            raise ConfigError(
                f"{self.label} {self.key!r} has no cap in Redis: it was never created "
                "(enqueue the batch again with --budget)"
            )
        if admitted == 0 and held > 0 and spent + amount <= cap and may_wait_for_holds():
            raise HeldBack
        if admitted == 0:
            when = f" for {_period_date(period)}" if self.daily else ""
            raise BudgetExceededError(
                f"{self.label} of ${cap / NANO:.6f}{when} reached: spent ${spent / NANO:.6f}, "
                f"${held / NANO:.6f} held by calls in flight, the next call may cost up to "
                f"${amount / NANO:.6f}",
                spent_usd=spent / NANO,
                budget_usd=cap / NANO,
                daily=self.daily,
            )
        reservation = f"{period}/{rid}" if self.daily else rid
        self._leases.hold(self._split(reservation), self.lease_s)  # renewed until settled
        return reservation

    def _reserve_locally(self, amount: int) -> str:
        with self._lock:
            if self._local_used + amount > self._allowance:
                raise BudgetExceededError(
                    f"{self.label}: Redis is unreachable and the local reserve of "
                    f"${self._allowance / NANO:.6f} ({self.fraction:g} of what was left) "
                    f"cannot cover a call of up to ${amount / NANO:.6f}",
                    spent_usd=self._local_used / NANO,
                    budget_usd=self._allowance / NANO,
                    daily=self.daily,
                )
            rid = f"{self._period}/~{uuid.uuid4().hex}" if self.daily else f"~{uuid.uuid4().hex}"
            self._local[rid] = amount
            self._local_used += amount
            self.local_calls += 1
        get_metrics().inc("budget_local_calls_total", labels={"budget": self.label})
        return rid

    def _lose(self, exc: BaseException) -> None:
        """Switch to the local reserve (said once per outage)."""
        with self._lock:
            self._next_probe = time.monotonic() + PROBE_S
            if self.degraded:
                return
            self.degraded = True
            self.lost += 1
            left = self._left or 0
            self._allowance = int(left * self.fraction)
            self._local_used = sum(self._local.values())
        get_metrics().inc("budget_redis_lost_total", labels={"budget": self.label})
        print(
            f"multiagent: Redis lost for the {self.label} ({' '.join(str(exc).split())}); "
            f"spending from a local reserve of ${self._allowance / NANO:.6f} until it returns",
            file=sys.stderr,
            flush=True,
        )

    def _usable(self) -> bool:
        """Whether to try Redis: always when connected; once per :data:`PROBE_S` when lost."""
        if not self.degraded:
            return True
        with self._lock:
            if time.monotonic() < self._next_probe:
                return False
            self._next_probe = time.monotonic() + PROBE_S
        try:
            self.client.ping()
        except _LOST:
            return False
        if self._flush():
            with self._lock:
                self.degraded = False
            print(f"multiagent: Redis is back for the {self.label}", file=sys.stderr, flush=True)
            return True
        return False

    def _flush(self) -> bool:
        """Send the settlements kept; ``False`` if Redis was lost again (the rest stay)."""
        with self._lock:
            orphans, self._orphans = self._orphans, []
        try:
            for orphan in orphans:
                base, rid = orphan.split("|")
                self._scripts["release"](keys=[base], args=[rid])
        except _LOST as exc:
            with self._lock:
                self._orphans.extend(orphans)
            self._lose(exc)
            return False
        while batch := self._pending.take(BATCH):
            try:
                self._scripts["settle"](
                    keys=[s[1] for s in batch], args=[self.ttl_s, *_pairs(batch)]
                )
            except _LOST as exc:
                self._pending.restore(batch)
                self._lose(exc)
                return False
            self._leases.drop(_keys(batch))
        return True

    def _flush_late(self) -> None:
        """The flusher's send: settlements no reservation took along (not while degraded)."""
        if not self.degraded:
            self._flush()

    def reconcile(self) -> bool:
        """Try to reach Redis and send the settlements kept; ``True`` when none is left."""
        with self._lock:
            self._next_probe = 0.0  # try now, whatever the probe interval
        if self._usable():
            self._flush()
        return not len(self._pending) and not self.degraded

    def close(self) -> None:
        """Send what is still kept (if Redis answers) and close the connection."""
        self._pending.close()
        if len(self._pending) and (not self.degraded or self._usable()):
            self._flush()
        self.client.close()


def _keys(settlements: list[Settlement]) -> list[LeaseKey]:
    """The (base, id) lease keys of ``settlements`` (a hold's close ends the hold's lease)."""
    return [(base, rid.removesuffix(">")) for _, base, rid, _ in settlements]


def _pairs(settlements: list[Settlement]) -> list[str | int]:
    """The (id, nano-USD) argument pairs of ``settlements``."""
    return [value for _, _, rid, amount in settlements for value in (rid, amount)]


@functools.cache
def _client(url: str) -> redis.Redis:
    """The process's budget connection to ``url`` (commands time out: a lost Redis degrades)."""
    return open_redis(url, socket_timeout=COMMAND_TIMEOUT_S)


@functools.cache
def redis_project_budget(
    url: str, *, daily_usd: float, lease_s: float, degraded_fraction: float
) -> RedisBudget:
    """The process's store of the project's daily budget in the Redis at ``url``.

    Raises:
        UsageError: Redis does not answer (one line naming the URL).
    """
    return RedisBudget(
        _client(url), key=f"{PREFIX}project", cap_usd=daily_usd, daily=True, lease_s=lease_s,
        degraded_fraction=degraded_fraction, label="project budget",
    )  # fmt: skip


def shared_budget(
    url: str, *, kind: str, name: str, lease_s: float, degraded_fraction: float
) -> RedisBudget:
    """The shared budget of batch (``kind="batch"``) or thread ``name``, its cap stored with it."""
    return RedisBudget(
        _client(url), key=budget_key(kind, name), cap_usd=None, lease_s=lease_s,
        degraded_fraction=degraded_fraction, label=f"{kind} budget",
    )  # fmt: skip


def thread_budget(
    url: str, *, thread_id: str, cap_usd: float, lease_s: float, degraded_fraction: float
) -> RedisBudget:
    """The budget of thread ``thread_id`` shared by every process running or resuming it: its
    total ``cap_usd`` (stored with each reservation, so a resume with a larger budget raises it)
    against everything the thread's calls settled in Redis.

    Raises:
        UsageError: Redis does not answer (one line naming the URL).
    """
    return RedisBudget(
        _client(url), key=budget_key("thread", thread_id), cap_usd=cap_usd, lease_s=lease_s,
        degraded_fraction=degraded_fraction, label="thread budget",
    )  # fmt: skip
