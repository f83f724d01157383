"""A diskcache ``Cache`` with one SQLite connection per process and exact counters beside it.

:class:`CacheStore` keeps diskcache (its table layout, expiry, culling and serialisation) but
gives each cache one connection per process, used under a process lock
(:mod:`multiagent.models._process_cache` says why: diskcache's connection per thread cost about
half of the framework's overhead on a fast model).

Writes do not cull (diskcache's ``cull_limit`` is 0); every :data:`CULL_EVERY` writes of a
process, :meth:`diskcache.Cache.cull` removes expired entries and evicts down to the size limit.

Counters (hits, misses, ...) are counted in this process's memory-mapped slot file, crash-proof
once :meth:`CacheStore.count` returns, and folded into a table of the database when a store
opens or closes (:mod:`multiagent.models._cache_counters`).

Entries may be written behind (``write_behind_s``, the completion cache's choice): a ``set``
is kept in memory, where this process's lookups see it, and written with the others pending in
one transaction after ``write_behind_s``, every :data:`FLUSH_EVERY` entries, on ``close`` and at
exit. A killed process loses its pending entries; that only turns a later lookup into a miss,
counted as one. Counts are never written behind.

A store may keep a key filter (``key_filter``, the completion cache's choice;
:mod:`multiagent.models._key_filter`): every key is marked in a file every process maps before
its entry can reach SQLite, and a lookup of an unmarked key is a miss without a SQLite read
(``sqlite3`` releases the GIL per statement, and among parallel nodes that hand-over cost
each miss about 0.1 ms of CPU where the read alone takes 5 µs).

The interface a store of another kind (Redis, ...) has to offer is small: :meth:`get_and_count`
(read a key, count found or missing), :meth:`set` (with expiry), :meth:`delete`, :meth:`count`,
:meth:`counters`, :meth:`clear`, ``len`` and :meth:`close`.
"""

from __future__ import annotations

import builtins
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import diskcache

from multiagent.models._cache_counters import ADD_COUNT, COUNTERS, FOLDED, create_counters
from multiagent.models._cache_writer import register_write_behind, wake_writer
from multiagent.models._counter_slots import SlotCounters
from multiagent.models._key_filter import KeyFilter, stored_keys
from multiagent.models._process_cache import ProcessCache

#: Writes between two culls (expired entries first, then by policy down to the size limit).
CULL_EVERY = 64
#: Pending entries that make a write-behind store write at once (the writer thread normally
#: writes them first; this bounds what a burst keeps in memory).
FLUSH_EVERY = 256
_MISSING = object()


class CacheStore:
    """One diskcache directory: entries plus named counters, one connection per process.

    Args:
        directory: The cache directory (created when missing).
        legacy_counters: A diskcache directory whose counters an earlier version kept apart;
            they are carried over once, when the counters table is created.
        write_behind_s: Write entries behind, at most this many seconds after their ``set``
            (``None``: each ``set`` is written before it returns).
        key_filter: Keep a filter of the keys every process stored
            (:mod:`multiagent.models._key_filter`), so that most misses skip SQLite; for a
            cache whose lookups mostly miss.
    """

    def __init__(
        self,
        directory: Path,
        *,
        legacy_counters: Path | None = None,
        write_behind_s: float | None = None,
        key_filter: bool = False,
    ) -> None:
        self.directory = Path(directory)
        self._lock = threading.Lock()
        # culling on every write costs three more statements per ``set`` (expired rows, page
        # count, size); culling every CULL_EVERY writes bounds the cache all the same
        self._cache = ProcessCache(str(self.directory), cull_limit=0)
        self._writes = 0
        self._slots = SlotCounters(self.directory / "counters")
        self._write_behind_s = write_behind_s
        # key -> (value, deadline or None): written behind, read by this process's lookups
        self._pending: dict[str, tuple[Any, float | None]] = {}
        # entries written behind go through a connection of their own, so lookups on the
        # shared one never wait for a batch being written (SQLite's WAL lets both proceed)
        self._writer = (
            None if write_behind_s is None else ProcessCache(str(self.directory), cull_limit=0)
        )
        self._write_lock = threading.Lock()  # taken before ``_lock`` when both are held
        with self._lock, self._cache.transact(retry=True):
            create_counters(self._cache, legacy_counters)
        self._fold()
        self._filter: KeyFilter | None = None
        if key_filter:
            with self._lock:
                self._filter = KeyFilter(self.directory, existing=stored_keys(self._cache._con))
        if write_behind_s is not None:
            register_write_behind(self, delay_s=write_behind_s)

    @contextmanager
    def locked(self) -> Iterator[diskcache.Cache]:
        """The diskcache, held for this thread (hold it briefly: every thread shares it)."""
        with self._lock:
            yield self._cache

    def _pending_value(self, key: str) -> Any:
        """A value written behind and not yet stored (``_MISSING`` if none or expired)."""
        found = self._pending.get(key)
        if found is None:
            return _MISSING
        value, deadline = found
        return _MISSING if deadline is not None and deadline <= time.time() else value

    def get(self, key: str, default: Any = None) -> Any:
        """The stored value of ``key`` (expired entries read as missing), or ``default``."""
        with self._lock:
            value = self._pending_value(key) if self._pending else _MISSING
            if value is not _MISSING:
                return value
            if self._filter is not None and not self._filter.may_hold(key):
                return default  # never stored by any process: no SQLite read
            return self._cache.get(key, default=default, retry=True)

    def get_and_count(self, key: str, default: Any, *, found: str, missing: str) -> Any:
        """:meth:`get`, counting ``found`` or ``missing`` (crash-proof when this returns)."""
        value = self.get(key, default)
        self.count(found if value is not default else missing)
        return value

    def set(self, key: str, value: Any, *, expire: float | None) -> None:
        """Store ``value`` under ``key``, expiring after ``expire`` seconds (``None``: never)."""
        if self._filter is not None:
            self._filter.add(key)  # before the entry can reach SQLite: see _key_filter
        with self._lock:
            if self._write_behind_s is None:
                self._write(key, value, expire)
                return
            deadline = None if expire is None else time.time() + expire
            self._pending[key] = (value, deadline)
            full = len(self._pending) >= FLUSH_EVERY
        if full:
            self.flush()
            return
        wake_writer()

    def _write(self, key: str, value: Any, expire: float | None) -> None:
        """Write one entry (the caller holds the lock)."""
        self._cache.set(key, value, expire=expire, retry=True)
        self._writes += 1
        if self._writes % CULL_EVERY == 0:
            self._cache.cull(retry=True)

    def flush(self) -> None:
        """Write every entry written behind now, in one transaction."""
        writer = self._writer
        if writer is None:
            return
        with self._write_lock:
            with self._lock:
                pending = dict(self._pending)  # they stay readable until they are written
            if not pending:
                return
            now = time.time()
            with writer.transact(retry=True):
                for key, (value, deadline) in pending.items():
                    # an entry that expired while pending is written as expired, as it would
                    # have been written at once: it reads as missing and is culled like others
                    expire = None if deadline is None else deadline - now
                    writer.set(key, value, expire=expire, retry=True)
            before, self._writes = self._writes, self._writes + len(pending)
            if before // CULL_EVERY != self._writes // CULL_EVERY:
                writer.cull(retry=True)
            with self._lock:
                for key, entry in pending.items():
                    if self._pending.get(key) is entry:
                        del self._pending[key]

    def delete(self, key: str) -> None:
        """Remove ``key`` (no error when absent)."""
        with self._write_lock, self._lock:
            self._pending.pop(key, None)
            self._cache.delete(key, retry=True)

    def count(self, name: str, delta: int = 1) -> None:
        """Add ``delta`` to counter ``name``; crash-proof when this returns."""
        try:
            self._slots.add(name, delta)
        except ValueError:  # a name too long for a slot, or the slot full: commit it instead
            with self._lock:
                self._cache._sql_retry(ADD_COUNT, (name, delta))

    def _folded(self) -> tuple[dict[str, int], builtins.set[str]]:
        """The folded totals and the names of the folded slot files."""
        with self._lock:
            rows = self._cache._sql(f"SELECT name, value FROM {COUNTERS}").fetchall()
            done = self._cache._sql(f"SELECT name FROM {FOLDED}").fetchall()
        return {str(n): int(v) for n, v in rows}, {str(n) for (n,) in done}

    def _fold_one(self, name: str, counts: dict[str, int]) -> None:
        """Add a dead process's counts and mark its file folded, in one transaction."""
        with self._lock, self._cache.transact(retry=True):
            sql = self._cache._sql
            if sql(f"SELECT 1 FROM {FOLDED} WHERE name = ?", (name,)).fetchall():
                return
            for counter, value in counts.items():
                sql(ADD_COUNT, (counter, value))
            sql(f"INSERT INTO {FOLDED} (name) VALUES (?)", (name,))

    def _fold(self) -> None:
        """Fold the slot files of dead processes into the counters table."""
        if self._slots.fold(self._fold_one):
            with self._lock:  # their files are gone: the marks are no longer needed
                present = {p.name for p in self._slots.directory.iterdir()}
                done = self._cache._sql(f"SELECT name FROM {FOLDED}").fetchall()
                for (name,) in done:
                    if name not in present:
                        self._cache._sql_retry(f"DELETE FROM {FOLDED} WHERE name = ?", (name,))

    def counters(self) -> dict[str, int]:
        """Every counter by name (every process's, all time since the last reset)."""
        return self._slots.totals(self._folded)

    def __len__(self) -> int:
        """Entries stored (expired ones not yet culled, and entries written behind, included)."""
        self.flush()
        with self._lock:
            return len(self._cache)

    def clear(self, *, counters: bool = False) -> None:
        """Drop every entry (and reset the counters when ``counters``)."""
        with self._write_lock, self._lock:
            self._pending.clear()
            self._cache.clear(retry=True)
        if counters:
            self._slots.reset(self._folded, self._offset)

    def _offset(self, totals: dict[str, int]) -> None:
        """Replace the folded totals with ``totals``."""
        with self._lock, self._cache.transact(retry=True):
            self._cache._sql(f"DELETE FROM {COUNTERS}")
            for name, value in totals.items():
                self._cache._sql(ADD_COUNT, (name, value))

    def close(self) -> None:
        """Write what is pending, give up the counter slot, close the connection (a later use
        reopens both)."""
        self.flush()
        self._slots.close()
        self._fold()  # this process's own slot too, now that it is given up
        with self._write_lock, self._lock:
            self._cache.close()
            if self._writer is not None:
                self._writer.close()
