"""Budget holds kept alive while the process that holds them lives.

A reservation of a budget shared by processes (Redis: :mod:`.budget_redis`; the SQLite project
budget: :mod:`.budget`) is a lease of ``budget.lease_s`` seconds: unless it is renewed, it
stops counting when the lease ends. :class:`LeaseKeeper` renews every hold its process keeps in
one call per period — a third of the shortest lease held, however many holds — from one daemon
thread, started by the first hold and ended after :data:`IDLE_S` with none. So a call may last
as long as it needs (a slow streaming answer takes minutes) and keeps its hold, while a process
killed mid-call stops renewing and its holds end within one lease. It is the scheme of the
shared limiter's slots (:mod:`._bp_redis_keeper`). A call adds no round trip: its hold is only
recorded here, in memory, when admitted, and forgotten once its settlement or release is sent.

A process alive but frozen for longer than a lease (SIGSTOP, a suspended VM) loses its holds
too. Its calls' settlements still count when they arrive (the money was spent), so such a
freeze can let other calls take the room and the budget pass its cap by what the frozen calls
cost: keep the lease above the longest freeze to expect.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Hashable, Iterable
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from multiagent.models._budget_lua import RENEW

if TYPE_CHECKING:
    import redis

_log = logging.getLogger(__name__)
#: Seconds the keeper thread waits with no hold before it ends (the next hold starts it again).
IDLE_S = 5.0
#: Longest pause before a failed renewal is tried again.
RETRY_S = 1.0

K = TypeVar("K", bound=Hashable)


class LeaseKeeper(Generic[K]):
    """The holds of one process in one store, renewed together while they are held.

    Args:
        renew: Renews the holds given as (key, lease seconds) in one call, or raises (the
            store did not answer); a hold no longer in the store (settled, released or
            expired) must stay gone.
        name: The keeper thread's name.
    """

    def __init__(self, renew: Callable[[list[tuple[K, float]]], object], *, name: str) -> None:
        self._renew = renew
        self._name = name
        self._held: dict[K, float] = {}  # key -> lease seconds
        self._lock = threading.Lock()
        self._changed = threading.Event()
        self._thread: threading.Thread | None = None
        self.renewals = 0  # renewal calls made (each covers every hold)
        self._failing = False
        _LIVE.add(self)

    def __len__(self) -> int:
        with self._lock:
            return len(self._held)

    def hold(self, key: K, lease_s: float) -> None:
        """Renew ``key`` (a hold just made, its lease fresh) until it is dropped."""
        with self._lock:
            shorter = not self._held or lease_s < min(self._held.values())
            self._held[key] = lease_s
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
        if shorter:
            self._changed.set()  # the keeper's period shortens (or it was idle)

    def drop(self, keys: Iterable[K]) -> None:
        """Stop renewing ``keys`` (settled or released in the store; unknown keys are ignored)."""
        with self._lock:
            for key in keys:
                self._held.pop(key, None)

    def _run(self) -> None:
        last = time.monotonic()
        while True:
            with self._lock:
                shortest = min(self._held.values(), default=None)
            if shortest is None:
                if not self._changed.wait(IDLE_S):
                    with self._lock:
                        if not self._held:
                            self._thread = None
                            return
                self._changed.clear()
                last = time.monotonic()  # the holds made since are fresh
                continue
            period = shortest / 3
            wait = last + period - time.monotonic()
            if wait > 0:
                self._changed.wait(wait)
                self._changed.clear()
                continue
            last = time.monotonic()
            if not self._renew_now():
                last -= period - min(period, RETRY_S)  # try again soon: the lease still runs

    def _renew_now(self) -> bool:
        with self._lock:
            held = list(self._held.items())
        if not held:
            return True
        try:
            self._renew(held)
        except Exception as exc:  # a lost store: the holds expire unless it answers in time
            if not self._failing:
                _log.warning("%s: could not renew %d budget holds: %s", self._name, len(held), exc)
            self._failing = True
            return False
        self._failing = False
        self.renewals += 1
        return True

    def _forget_after_fork(self) -> None:
        """In a forked child: its parent's holds are the parent's to renew."""
        self._lock = threading.Lock()
        self._changed = threading.Event()
        self._held = {}
        self._thread = None


#: A hold's lease in Redis: its budget's base key and its id there.
LeaseKey = tuple[str, str]


_KEEPERS: weakref.WeakKeyDictionary[redis.Redis, LeaseKeeper[LeaseKey]]
_KEEPERS = weakref.WeakKeyDictionary()
_KEEPERS_LOCK = threading.Lock()


def lease_keeper(client: redis.Redis) -> LeaseKeeper[LeaseKey]:
    """The keeper of this process's holds in the Redis of ``client``: one per connection, so
    one ``RENEW`` per period covers the holds of every budget reserved through it."""
    with _KEEPERS_LOCK:
        found = _KEEPERS.get(client)
        if found is not None:
            return found
        ref = weakref.ref(client)

        def renew(held: list[tuple[LeaseKey, float]]) -> None:
            live = ref()
            if live is None:  # the connection's budgets are gone: nobody settles these
                keeper.drop(key for key, _ in held)
                return
            by_base: dict[str, list[str | int]] = {}
            for (base, rid), lease_s in held:
                by_base.setdefault(base, []).extend((rid, max(1, int(lease_s * 1000))))
            args: list[str | int] = []
            for pairs in by_base.values():
                args.extend((len(pairs) // 2, *pairs))
            live.register_script(RENEW)(keys=list(by_base), args=args)

        keeper: LeaseKeeper[LeaseKey] = LeaseKeeper(renew, name="budget-leases")
        _KEEPERS[client] = keeper
        return keeper


_LIVE: weakref.WeakSet[LeaseKeeper[Any]] = weakref.WeakSet()


def _after_fork() -> None:
    for keeper in list(_LIVE):
        keeper._forget_after_fork()


os.register_at_fork(after_in_child=_after_fork)
