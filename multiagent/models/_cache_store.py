"""A diskcache ``Cache`` with one SQLite connection per process and exact counters beside it.

diskcache opens one SQLite connection per *thread* (a ``threading.local``). LangGraph runs
parallel nodes on a fresh thread pool for every ``invoke``, so each run paid for new connections
(``connect`` plus a dozen ``PRAGMA`` statements each) in every cache it touched — about half of
the framework's overhead on a fast model. :class:`CacheStore` keeps diskcache (its table layout,
expiry, culling and serialisation) but gives each cache one connection per process, opened with
``check_same_thread=False`` and used under a process lock: SQLite transactions on one
connection cannot interleave, and a lock hands over in microseconds where SQLite's busy handler
sleeps a millisecond or more. Other processes still coordinate through SQLite's own locks.

Writes do not cull (diskcache's ``cull_limit`` is 0); every :data:`CULL_EVERY` writes of a
process, :meth:`diskcache.Cache.cull` removes expired entries and evicts down to the size limit.

Counters (hits, misses, ...) live in a table of the same database, so counting needs no second
connection. Each :meth:`CacheStore.count` is one autocommit ``UPSERT``: once it returns, the
count is in the write-ahead log, and WAL with ``synchronous=NORMAL`` (diskcache's default)
survives the death of the process (``SIGKILL`` included; only a power cut can lose the last
commits). Nothing is buffered in memory, so no count is lost when a process is killed.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import diskcache

_COUNTERS = "MultiagentCounters"
#: Writes between two culls (expired entries first, then by policy down to the size limit).
CULL_EVERY = 64
_COUNT = (
    f"INSERT INTO {_COUNTERS} (name, value) VALUES (?, ?) "
    "ON CONFLICT(name) DO UPDATE SET value = value + excluded.value"
)


class _ProcessCache(diskcache.Cache):  # type: ignore[misc]
    """``diskcache.Cache`` whose connection is shared by the threads of a process.

    Only :attr:`_con` and :meth:`close` differ from diskcache's (which keep the connection in a
    ``threading.local``); every use must hold the owning :class:`CacheStore`'s lock.
    """

    def __init__(self, directory: str, **settings: Any) -> None:
        self._shared: sqlite3.Connection | None = None
        self._shared_pid: int | None = None
        super().__init__(directory, **settings)

    @property
    def _con(self) -> sqlite3.Connection:
        pid = os.getpid()
        if self._shared_pid != pid:  # a forked child must not use its parent's connection
            self._shared, self._shared_pid = None, pid
        con = self._shared
        if con is None:
            con = sqlite3.connect(
                os.path.join(self._directory, diskcache.core.DBNAME),
                timeout=self._timeout,
                isolation_level=None,
                check_same_thread=False,
            )
            self._shared = con
            # per-connection pragmas (WAL, synchronous, mmap...) as diskcache sets them
            try:
                rows = con.execute("SELECT key, value FROM Settings").fetchall()
            except sqlite3.OperationalError:
                rows = []
            for key, value in rows:
                if key.startswith("sqlite_"):
                    self.reset(key, value, update=False)
        return con

    def close(self) -> None:
        """Close the process's connection (the next use opens a new one)."""
        con, self._shared = self._shared, None
        if con is not None:
            con.close()


class CacheStore:
    """One diskcache directory: entries plus named counters, one connection per process.

    Args:
        directory: The cache directory (created when missing).
        legacy_counters: A diskcache directory whose counters an earlier version kept apart;
            they are carried over once, when the counters table is created.
    """

    def __init__(self, directory: Path, *, legacy_counters: Path | None = None) -> None:
        self.directory = Path(directory)
        self._lock = threading.Lock()
        # culling on every write costs three more statements per ``set`` (expired rows, page
        # count, size); culling every CULL_EVERY writes bounds the cache all the same
        self._cache = _ProcessCache(str(self.directory), cull_limit=0)
        self._writes = 0
        with self._lock, self._cache.transact(retry=True):
            self._create_counters(legacy_counters)

    def _create_counters(self, legacy: Path | None) -> None:
        """Create the counters table, seeded from ``legacy`` counters when it is new."""
        sql = self._cache._sql
        exists = sql(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (_COUNTERS,)
        ).fetchall()
        if exists:
            return
        sql(
            f"CREATE TABLE {_COUNTERS} (name TEXT PRIMARY KEY, value INTEGER NOT NULL)"
            " WITHOUT ROWID"
        )
        if legacy is None or not (legacy / diskcache.core.DBNAME).exists():
            return
        old = diskcache.Cache(str(legacy))
        try:
            for key in list(old.iterkeys()):
                sql(_COUNT, (str(key), int(old.get(key, 0, retry=True))))
        finally:
            old.close()

    @contextmanager
    def locked(self) -> Iterator[diskcache.Cache]:
        """The diskcache, held for this thread (hold it briefly: every thread shares it)."""
        with self._lock:
            yield self._cache

    def get(self, key: str, default: Any = None) -> Any:
        """The stored value of ``key`` (expired entries read as missing), or ``default``."""
        with self._lock:
            return self._cache.get(key, default=default, retry=True)

    def get_and_count(self, key: str, default: Any, *, found: str, missing: str) -> Any:
        """:meth:`get`, counting ``found`` or ``missing`` (one lock, one committed write)."""
        with self._lock:
            value = self._cache.get(key, default=default, retry=True)
            self._count(found if value is not default else missing, 1)
        return value

    def set(self, key: str, value: Any, *, expire: float | None) -> None:
        """Store ``value`` under ``key``, expiring after ``expire`` seconds (``None``: never)."""
        with self._lock:
            self._cache.set(key, value, expire=expire, retry=True)
            self._writes += 1
            if self._writes % CULL_EVERY == 0:
                self._cache.cull(retry=True)

    def delete(self, key: str) -> None:
        """Remove ``key`` (no error when absent)."""
        with self._lock:
            self._cache.delete(key, retry=True)

    def count(self, name: str, delta: int = 1) -> None:
        """Add ``delta`` to counter ``name``; committed (durable) when this returns."""
        with self._lock:
            self._count(name, delta)

    def _count(self, name: str, delta: int) -> None:
        """Add to a counter; the caller holds the lock."""
        # autocommit: one statement is one transaction; a busy database is retried, never lost
        self._cache._sql_retry(_COUNT, (name, delta))

    def counters(self) -> dict[str, int]:
        """Every counter by name."""
        with self._lock:
            rows = self._cache._sql(f"SELECT name, value FROM {_COUNTERS}").fetchall()
        return {str(name): int(value) for name, value in rows}

    def __len__(self) -> int:
        """Entries stored (expired ones not yet culled included)."""
        with self._lock:
            return len(self._cache)

    def clear(self, *, counters: bool = False) -> None:
        """Drop every entry (and reset the counters when ``counters``)."""
        with self._lock:
            self._cache.clear(retry=True)
            if counters:
                self._cache._sql_retry(f"DELETE FROM {_COUNTERS}")

    def close(self) -> None:
        """Close the connection (a later use reopens it)."""
        with self._lock:
            self._cache.close()
