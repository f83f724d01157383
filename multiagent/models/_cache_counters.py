"""The counters table of a cache store, and reading it (with the entries' number) read-only.

Counters (hits, misses, ...) are counted in each process's memory-mapped slot file
(:mod:`multiagent.models._counter_slots`): once
:meth:`~multiagent.models._cache_store.CacheStore.count` returns, the count is in the page cache
and survives the death of the process (``SIGKILL`` included; only a power cut can lose it, as
with SQLite's ``synchronous=NORMAL``), without the write transaction per lookup that committing
it to SQLite cost (about a third of a cached call's overhead). Slot files of dead processes are
folded into a table of the database (:data:`COUNTERS`, the files folded named in
:data:`FOLDED`) when a store opens or closes; the totals are that table plus the files not yet
folded.
"""

from __future__ import annotations

import builtins
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import diskcache

from multiagent.models._counter_slots import read_totals
from multiagent.persistence.health import read_only_uri

#: The folded totals, by counter name.
COUNTERS = "MultiagentCounters"
#: The slot files already folded into :data:`COUNTERS`, by name.
FOLDED = "MultiagentFoldedSlots"
#: Adds to a counter of :data:`COUNTERS`.
ADD_COUNT = (
    f"INSERT INTO {COUNTERS} (name, value) VALUES (?, ?) "
    "ON CONFLICT(name) DO UPDATE SET value = value + excluded.value"
)


def create_counters(cache: diskcache.Cache, legacy: Path | None) -> None:
    """Create the counters table, seeded from ``legacy`` counters when it is new."""
    sql = cache._sql
    sql(f"CREATE TABLE IF NOT EXISTS {FOLDED} (name TEXT PRIMARY KEY) WITHOUT ROWID")
    exists = sql(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (COUNTERS,)
    ).fetchall()
    if exists:
        return
    sql(f"CREATE TABLE {COUNTERS} (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID")
    if legacy is None or not (legacy / diskcache.core.DBNAME).exists():
        return
    old = diskcache.Cache(str(legacy))
    try:
        for key in list(old.iterkeys()):
            sql(ADD_COUNT, (str(key), int(old.get(key, 0, retry=True))))
    finally:
        old.close()


def read_stored(directory: Path) -> tuple[dict[str, int], int]:
    """Every counter and the number of entries of the store in ``directory``, read from its
    files without opening it: for a process that may not write there (a dashboard given the
    data directory read-only). Nothing is created and no slot file is folded; entries another
    process still writes behind are not counted until they are stored.
    """
    database = directory / diskcache.core.DBNAME
    if not database.exists():
        return {}, 0
    uri = read_only_uri(database.resolve())
    with closing(sqlite3.connect(uri, uri=True, timeout=10.0)) as conn:

        def rows(sql: str) -> list[tuple[Any, ...]]:
            try:
                return conn.execute(sql).fetchall()
            except sqlite3.OperationalError as exc:
                if "no such table" in str(exc):  # no store with counters has opened it yet
                    return []
                raise

        def folded() -> tuple[dict[str, int], builtins.set[str]]:
            totals = {str(n): int(v) for n, v in rows(f"SELECT name, value FROM {COUNTERS}")}
            return totals, {str(n) for (n,) in rows(f"SELECT name FROM {FOLDED}")}

        counters = read_totals(directory / "counters", folded)
        count = rows("SELECT value FROM Settings WHERE key = 'count'")
    return counters, int(count[0][0]) if count else 0
