"""A ``diskcache.Cache`` whose one SQLite connection is shared by the threads of a process.

diskcache opens one SQLite connection per *thread* (a ``threading.local``). LangGraph runs
parallel nodes on a fresh thread pool for every ``invoke``, so each run paid for new connections
(``connect`` plus a dozen ``PRAGMA`` statements each) in every cache it touched — about half of
the framework's overhead on a fast model. :class:`ProcessCache` keeps diskcache (its table
layout, expiry, culling and serialisation) but gives each cache one connection per process,
opened with ``check_same_thread=False`` and used under a process lock
(:class:`~multiagent.models._cache_store.CacheStore`'s): SQLite transactions on one connection
cannot interleave, and a lock hands over in microseconds where SQLite's busy handler sleeps a
millisecond or more. Other processes still coordinate through SQLite's own locks.
"""

from __future__ import annotations

import os
import sqlite3
from typing import Any

import diskcache


class ProcessCache(diskcache.Cache):  # type: ignore[misc]
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
