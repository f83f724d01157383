"""Settlements of a Redis budget made but not yet sent (:mod:`multiagent.models.budget_redis`).

A settlement does not need a round trip of its own: until it reaches Redis its reservation —
the call's worst case, never less than what it cost — stays held, so no process can spend what
it frees, and the cap holds. So settlements wait here and travel with the next reservation (one
script settles them, then reserves); when none follows within :data:`DEFER_S`, a flusher thread
sends them, several in one script. While Redis is away they wait here too, and go when it
answers again. Each carries its reservation id, which the server counts once, so one sent twice
(a reply lost with the connection) is not charged twice.
"""

from __future__ import annotations

import atexit
import contextlib
import threading
import weakref
from collections.abc import Callable

#: Seconds a settlement waits for a reservation to ride along before the flusher sends it.
DEFER_S = 0.05
#: Settlements sent in one script at most.
BATCH = 64
#: Seconds the flusher waits idle before it ends (the next settlement starts it again).
IDLE_S = 5.0

#: A settlement: its reservation as the caller knows it, the base key, the id there, nano-USD.
Settlement = tuple[str, str, str, int]


class PendingSettlements:
    """Settlements kept until sent; a flusher thread (started on first use) sends late ones.

    Args:
        flush: Sends every kept settlement (and returns whether Redis answered); called by
            the flusher :data:`DEFER_S` after a settlement was kept, unless one was sent before.
    """

    def __init__(self, flush: Callable[[], object]) -> None:
        self._flush = flush
        self._items: dict[str, Settlement] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None
        _LIVE.add(self)

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def add(self, settlement: Settlement) -> None:
        """Keep ``settlement`` (the last one for a reservation wins)."""
        with self._lock:
            self._items[settlement[0]] = settlement
        self._wake.set()
        with self._lock:
            if self._thread is None and not self._closed.is_set():
                self._thread = threading.Thread(
                    target=self._run, name="budget-settlements", daemon=True
                )
                self._thread.start()

    def take(self, limit: int = BATCH) -> list[Settlement]:
        """Up to ``limit`` settlements, no longer kept (give them back with :meth:`restore`)."""
        with self._lock:
            taken = [self._items.pop(key) for key in list(self._items)[:limit]]
        return taken

    def restore(self, settlements: list[Settlement]) -> None:
        """Keep again settlements whose sending failed, ahead of those kept since (a newer one
        for a reservation wins).

        Order matters: an item's draws must reach Redis before the close of its hold, which
        frees what the hold has left; a close sent ahead of them, in another script, would free
        room that the draws then spend again.
        """
        with self._lock:
            older = {s[0]: s for s in settlements if s[0] not in self._items}
            self._items = {**older, **self._items}

    def close(self) -> None:
        """Stop the flusher (what is kept stays kept)."""
        self._closed.set()
        self._wake.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._closed.is_set():
            if not self._wake.wait(IDLE_S):
                with self._lock:  # idle: end (a budget used once holds no thread for ever)
                    if not self._wake.is_set():
                        self._thread = None
                        return
                continue
            if self._closed.wait(DEFER_S):
                return
            self._wake.clear()  # a settlement kept after this is in the flush below, or wakes us
            if len(self):
                self._flush()

    def flush_at_exit(self) -> None:
        """Send what is kept before the process ends (a budget nobody closed)."""
        if len(self):
            with contextlib.suppress(Exception):  # Redis may be gone; the leases then expire
                self._flush()


_LIVE: weakref.WeakSet[PendingSettlements] = weakref.WeakSet()


@atexit.register
def _flush_all() -> None:
    for pending in list(_LIVE):
        pending.flush_at_exit()
