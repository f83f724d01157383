"""What each run of a thread spent, kept beside the thread's checkpoints.

A node that raises writes nothing to the graph's state, so what it paid for before it raised (a
tool loop's first answer, a structured call whose next attempt the budget refused, a call answered
just before Ctrl-C) is in the run's ledger but in no checkpoint. Read from state alone, a thread's
spend would lose it: a resume would be given more budget than the thread has left, and its usage
would disagree with the metrics and the traces. A validation resumed at the checkpoint before its
validators forks the thread, and the abandoned branch's node entries leave the head's state too.

So at the end of each run its ledger's totals are written here, keyed by thread and run. A thread's
usage is these totals for the runs recorded, plus the state's node entries of a run that never got
to record (a killed process), never both for one run.

The checkpointer has no place for data outside the graph's state (a pending write would be
replayed as a task's output on resume, and ``update_state`` changes what runs next), hence a
small table of our own in the checkpointer's database: SQLite's file or PostgreSQL's database,
through the saver's own connection and lock. Any other saver (the in-memory one, a caller's) keeps
the totals in this process's memory, as long as the saver lives. The totals hold numbers only, no
user text, so they are not encrypted.
"""

from __future__ import annotations

import json
import threading
import weakref
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.sqlite import SqliteSaver

_TABLE = "multiagent_run_usage"
_SQLITE_SCHEMA = (
    f"CREATE TABLE IF NOT EXISTS {_TABLE} (thread_id TEXT NOT NULL, run_id TEXT NOT NULL, "
    "totals TEXT NOT NULL, PRIMARY KEY (thread_id, run_id))"
)
_POSTGRES_SCHEMA = (
    f"CREATE TABLE IF NOT EXISTS {_TABLE} (thread_id TEXT NOT NULL, run_id TEXT NOT NULL, "
    "totals JSONB NOT NULL, PRIMARY KEY (thread_id, run_id))"
)

_in_memory: weakref.WeakKeyDictionary[Any, dict[str, dict[str, dict[str, Any]]]] = (
    weakref.WeakKeyDictionary()
)
_in_memory_lock = threading.Lock()
_ready: weakref.WeakSet[Any] = weakref.WeakSet()


def _postgres(saver: BaseCheckpointSaver[Any]) -> bool:
    module = type(saver).__module__
    return module.startswith("langgraph.checkpoint.postgres") or any(
        c.__module__.startswith("langgraph.checkpoint.postgres") for c in type(saver).__mro__
    )


def _sqlite_rows(saver: SqliteSaver, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
    with saver.cursor() as cur:
        if saver not in _ready:
            cur.execute(_SQLITE_SCHEMA)
            _ready.add(saver)
        return list(cur.execute(sql, params).fetchall())


def _postgres_rows(saver: Any, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
    from multiagent.persistence.postgres import connection_of, create_table

    with connection_of(saver) as conn:
        if saver not in _ready:
            create_table(conn, _POSTGRES_SCHEMA)  # processes recording at once on a fresh database
            _ready.add(saver)
        with conn.cursor() as cur:
            cur.execute(sql.replace("?", "%s"), params)
            if cur.description is None:
                return []
            return [tuple(row.values()) if isinstance(row, dict) else tuple(row) for row in cur]


def _rows(
    saver: BaseCheckpointSaver[Any], sql: str, params: Sequence[Any]
) -> list[tuple[Any, ...]]:
    if isinstance(saver, SqliteSaver):
        return _sqlite_rows(saver, sql, params)
    return _postgres_rows(saver, sql, params)


def _kept_in_memory(saver: BaseCheckpointSaver[Any]) -> bool:
    return not isinstance(saver, SqliteSaver) and not _postgres(saver)


def record_run(
    saver: BaseCheckpointSaver[Any], *, thread_id: str, run_id: str, totals: Mapping[str, Any]
) -> None:
    """Keep what run ``run_id`` of ``thread_id`` spent (its ledger's totals, JSON-ready; a
    thread's are summed by :func:`~multiagent.nodes.usage.thread_totals`); idempotent."""
    figures = dict(totals)
    if _kept_in_memory(saver):
        with _in_memory_lock:
            _in_memory.setdefault(saver, {}).setdefault(thread_id, {})[run_id] = figures
        return
    upsert = (
        f"INSERT INTO {_TABLE} (thread_id, run_id, totals) VALUES (?, ?, ?) "
        "ON CONFLICT (thread_id, run_id) DO UPDATE SET totals = excluded.totals"
    )
    _rows(saver, upsert, (thread_id, run_id, json.dumps(figures)))


def recorded_runs(saver: BaseCheckpointSaver[Any], thread_id: str) -> dict[str, dict[str, Any]]:
    """The totals of every recorded run of ``thread_id``, by run id."""
    if _kept_in_memory(saver):
        with _in_memory_lock:
            found = _in_memory.get(saver, {}).get(thread_id, {})
            return {run: dict(totals) for run, totals in found.items()}
    rows = _rows(saver, f"SELECT run_id, totals FROM {_TABLE} WHERE thread_id = ?", (thread_id,))
    return {
        str(run): json.loads(totals) if isinstance(totals, str | bytes) else dict(totals)
        for run, totals in rows
    }


def forget_threads(saver: BaseCheckpointSaver[Any], thread_ids: Iterable[str]) -> None:
    """Drop the recorded runs of threads that are deleted."""
    doomed = list(thread_ids)
    if not doomed:
        return
    if _kept_in_memory(saver):
        with _in_memory_lock:
            threads = _in_memory.get(saver, {})
            for thread_id in doomed:
                threads.pop(thread_id, None)
        return
    for thread_id in doomed:
        _rows(saver, f"DELETE FROM {_TABLE} WHERE thread_id = ?", (thread_id,))


__all__ = ["forget_threads", "record_run", "recorded_runs"]
