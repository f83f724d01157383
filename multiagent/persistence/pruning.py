"""Checkpoint retention: keep the last N checkpoints per thread, drop old threads, reclaim space.

LangGraph's SQLite saver never deletes anything, so its file grows without bound; this module
prunes it directly: per thread and namespace it keeps the newest
``profile.memory.checkpoints_per_thread`` checkpoints (ids are time-ordered UUIDv6) and deletes
the writes of the checkpoints it removes, then ``VACUUM``\\s. On PostgreSQL it calls the
saver's own ``prune`` (see :mod:`multiagent.persistence.postgres`).

A thread whose latest checkpoint has a pending interrupt is waiting for a human: its latest
checkpoint and pending writes are always kept, and it is not dropped for its age.

A thread another process is running now is left whole (``skipped``): its run keeps writing to
it, and one pruned beside it would go on with its early history gone. Which threads run
elsewhere is the caller's to say (``running``): the registry of live runs (the data
directory's, or the PostgreSQL database's) is read above this layer, by a function that also
holds run starts off for a ``with`` block, on every machine that shares the database. Each
trim, and the deletion of the old threads, happens inside one such block, after the running
threads are read again: a run that started after the first read is seen there, and none starts
during the cut.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.serde.types import INTERRUPT
from langgraph.checkpoint.sqlite import SqliteSaver

from multiagent._crash import crash_point
from multiagent.errors import UsageError
from multiagent.persistence.checkpointer import checkpoint_path, open_checkpointer
from multiagent.persistence.run_usage import forget_threads
from multiagent.policies import Settings

_DELTA_SQL = (
    "SELECT 1 FROM checkpoints WHERE thread_id = ? AND ("
    "instr(CAST(metadata AS TEXT), '\"counters_since_delta_snapshot\"') > 0 OR "
    "instr(CAST(metadata AS TEXT), '\"delta_writes_versioned\"') > 0) LIMIT 1"
)


#: Holds run starts off for a ``with`` block and yields the threads other processes run now,
#: each with the process that runs it (``process PID``, ``on HOST`` for another machine's).
RunningThreads = Callable[[], AbstractContextManager[Mapping[str, str]]]


class CheckpointStore(Protocol):
    """The operations pruning needs from a checkpoint database."""

    backend: str
    trim_strategy: str

    def thread_counts(self) -> dict[str, int]: ...
    def namespace_max(self, thread_id: str) -> int: ...
    def uses_delta_channel(self, thread_id: str) -> bool: ...
    def delete_threads(self, thread_ids: Sequence[str]) -> None: ...
    def trim(self, thread_id: str, keep: int) -> None: ...
    def size_bytes(self) -> int: ...
    def vacuum(self) -> None: ...


class SqliteCheckpointStore:
    """Pruning for LangGraph's SQLite saver, through its connection and lock."""

    backend = "sqlite"
    trim_strategy = "keep the newest N checkpoints of each namespace"

    def __init__(self, saver: SqliteSaver) -> None:
        self.saver = saver

    def thread_counts(self) -> dict[str, int]:
        """Checkpoints per thread, all namespaces together."""
        with self.saver.cursor(transaction=False) as cur:
            rows = cur.execute(
                "SELECT thread_id, count(*) FROM checkpoints GROUP BY thread_id"
            ).fetchall()
        return {str(t): int(n) for t, n in rows}

    def namespace_max(self, thread_id: str) -> int:
        """The most checkpoints any one namespace of the thread has."""
        with self.saver.cursor(transaction=False) as cur:
            rows = cur.execute(
                "SELECT count(*) FROM checkpoints WHERE thread_id = ? GROUP BY checkpoint_ns",
                (thread_id,),
            ).fetchall()
        return max((int(n) for (n,) in rows), default=0)

    def uses_delta_channel(self, thread_id: str) -> bool:
        """Whether the thread's channels rebuild from older checkpoints (then it is skipped)."""
        with self.saver.cursor(transaction=False) as cur:
            return cur.execute(_DELTA_SQL, (thread_id,)).fetchone() is not None

    def delete_threads(self, thread_ids: Sequence[str]) -> None:
        """Remove whole threads, with what their runs spent."""
        for thread_id in thread_ids:
            self.saver.delete_thread(thread_id)
        forget_threads(self.saver, thread_ids)

    def trim(self, thread_id: str, keep: int) -> None:
        """Keep the newest ``keep`` checkpoints of each namespace, in one transaction."""
        with self.saver.cursor() as cur:
            namespaces = [
                ns
                for (ns,) in cur.execute(
                    "SELECT DISTINCT checkpoint_ns FROM checkpoints WHERE thread_id = ?",
                    (thread_id,),
                ).fetchall()
            ]
            for ns in namespaces:
                doomed = [
                    cid
                    for (cid,) in cur.execute(
                        "SELECT checkpoint_id FROM checkpoints WHERE thread_id = ? AND "
                        "checkpoint_ns = ? ORDER BY checkpoint_id DESC LIMIT -1 OFFSET ?",
                        (thread_id, ns, keep),
                    ).fetchall()
                ]
                for start in range(0, len(doomed), 500):
                    chunk = doomed[start : start + 500]
                    marks = ",".join("?" * len(chunk))
                    where = f"thread_id = ? AND checkpoint_ns = ? AND checkpoint_id IN ({marks})"
                    cur.execute(f"DELETE FROM writes WHERE {where}", (thread_id, ns, *chunk))
                    cur.execute(f"DELETE FROM checkpoints WHERE {where}", (thread_id, ns, *chunk))
                    # a kept checkpoint whose parent is gone has no parent, as on PostgreSQL
                    cur.execute(
                        "UPDATE checkpoints SET parent_checkpoint_id = NULL WHERE thread_id = ? "
                        f"AND checkpoint_ns = ? AND parent_checkpoint_id IN ({marks})",
                        (thread_id, ns, *chunk),
                    )
                    crash_point("prune")

    def size_bytes(self) -> int:
        """The database file with its WAL and shared-memory files."""
        base = checkpoint_file(self.saver)
        if base is None:
            return 0
        parts = [base, base.with_name(base.name + "-wal"), base.with_name(base.name + "-shm")]
        return sum(p.stat().st_size for p in parts if p.exists())

    def vacuum(self) -> None:
        """``VACUUM``, then truncate the WAL so the space really goes back to the disk."""
        with self.saver.lock:
            self.saver.conn.commit()
            self.saver.conn.execute("VACUUM")
            self.saver.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def checkpoint_file(saver: SqliteSaver) -> Path | None:
    """The main database file of a SQLite saver, or ``None`` for an in-memory one."""
    rows = saver.conn.execute("PRAGMA database_list").fetchall()
    for _seq, name, filename in rows:
        if name == "main" and filename:
            return Path(filename)
    return None


@dataclass
class PruneReport:
    """What one pruning pass did."""

    backend: str
    keep_per_thread: int
    max_age_days: float
    trim_strategy: str
    threads_before: int = 0
    threads_after: int = 0
    checkpoints_before: int = 0
    checkpoints_after: int = 0
    threads_deleted: list[str] = field(default_factory=list)
    threads_trimmed: list[str] = field(default_factory=list)
    kept_for_interrupts: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    bytes_before: int = 0
    bytes_after: int = 0
    seconds: float = 0.0

    @property
    def bytes_reclaimed(self) -> int:
        """Bytes the database shrank by (never negative)."""
        return max(0, self.bytes_before - self.bytes_after)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {**asdict(self), "bytes_reclaimed": self.bytes_reclaimed}


def store_for(saver: BaseCheckpointSaver[Any]) -> CheckpointStore:
    """The pruning backend for an open saver."""
    if isinstance(saver, SqliteSaver):
        return SqliteCheckpointStore(saver)
    from langgraph.checkpoint.postgres import PostgresSaver

    from multiagent.persistence.postgres import PostgresCheckpointStore

    if isinstance(saver, PostgresSaver):
        return PostgresCheckpointStore(saver)
    raise UsageError(f"cannot prune a {type(saver).__name__} checkpointer; valid: sqlite, postgres")


def thread_head(saver: BaseCheckpointSaver[Any], thread_id: str) -> tuple[datetime | None, bool]:
    """When the thread's latest root checkpoint was made, and whether an interrupt waits on it."""
    found = saver.get_tuple({"configurable": {"thread_id": thread_id, "checkpoint_ns": ""}})
    if found is None:
        return None, False
    stamp = found.checkpoint.get("ts")
    made = datetime.fromisoformat(stamp) if isinstance(stamp, str) else None
    waiting = any(write[1] == INTERRUPT for write in found.pending_writes or ())
    return made, waiting


def _cutoff(now: datetime, max_age_days: float) -> datetime:
    """``now`` less ``max_age_days``; an age reaching before the calendar's start (year 1)
    keeps every thread."""
    try:
        return now - timedelta(days=max_age_days)
    except OverflowError:
        return datetime.min.replace(tzinfo=UTC)


def prune_saver(
    saver: BaseCheckpointSaver[Any],
    *,
    keep: int,
    max_age_days: float,
    now: datetime | None = None,
    vacuum: bool = True,
    running: RunningThreads | None = None,
) -> PruneReport:
    """Prune an open SQLite or PostgreSQL saver; see :func:`prune_checkpoints`."""
    if keep < 1:
        raise UsageError(f"invalid keep={keep}; keep at least 1 checkpoint per thread")
    started = time.perf_counter()
    store = store_for(saver)
    report = PruneReport(store.backend, keep, max_age_days, store.trim_strategy)
    report.bytes_before = store.size_bytes()
    counts = store.thread_counts()
    report.threads_before, report.checkpoints_before = len(counts), sum(counts.values())
    cutoff = _cutoff(now or datetime.now(UTC), max_age_days)
    hold = running or _none_running
    with hold() as elsewhere:
        listed = dict(elsewhere)
    crash_point("prune-listed")

    def is_running(thread_id: str, now_running: Mapping[str, str]) -> bool:
        process = now_running.get(thread_id)
        if process is not None:
            report.skipped[thread_id] = f"running in {process}"
        return process is not None

    old: list[str] = []
    for thread_id in sorted(counts):
        if is_running(thread_id, listed):
            continue
        made, waiting = thread_head(saver, thread_id)
        if made is not None and made < cutoff:
            if waiting:
                report.kept_for_interrupts.append(thread_id)
            else:
                old.append(thread_id)
                continue
        if store.namespace_max(thread_id) <= keep:
            continue
        if store.uses_delta_channel(thread_id):
            report.skipped[thread_id] = "uses a DeltaChannel; trimming would lose its state"
            continue
        with hold() as now_running:  # no run starts on it until it is trimmed
            if is_running(thread_id, now_running):
                continue
            store.trim(thread_id, keep)
        report.threads_trimmed.append(thread_id)
    with hold() as now_running:  # and none on the old threads until they are gone
        # one resumed since the first look is running, or ran and is no longer old
        old = [t for t in old if not is_running(t, now_running) and _still_old(saver, t, cutoff)]
        store.delete_threads(old)
    report.threads_deleted = old
    if vacuum:
        store.vacuum()
    after = store.thread_counts()
    report.threads_after, report.checkpoints_after = len(after), sum(after.values())
    report.bytes_after = store.size_bytes()
    report.seconds = round(time.perf_counter() - started, 4)
    return report


def _none_running() -> AbstractContextManager[Mapping[str, str]]:
    """No other process runs threads (the caller said nothing of them)."""
    return nullcontext({})


def _still_old(saver: BaseCheckpointSaver[Any], thread_id: str, cutoff: datetime) -> bool:
    """Whether the thread's head is still older than ``cutoff`` and waits on no interrupt."""
    made, waiting = thread_head(saver, thread_id)
    return made is not None and made < cutoff and not waiting


def prune_checkpoints(
    settings: Settings,
    *,
    keep: int | None = None,
    max_age_days: float | None = None,
    now: datetime | None = None,
    running: RunningThreads | None = None,
) -> PruneReport:
    """Prune the configured checkpoint database (SQLite by default, PostgreSQL by URL).

    Args:
        settings: Resolved settings; limits default to ``profile.memory``.
        keep: Checkpoints kept per thread (``checkpoints_per_thread``).
        max_age_days: Threads whose latest checkpoint is older are removed, unless an
            interrupt waits on them (``thread_max_age_days``).
        now: The clock, for tests.
        running: Holds run starts off for a ``with`` block and yields the threads another
            process runs now, each with that process (see
            :func:`multiagent.observability.live_starts.runs_held`): they are skipped, neither
            trimmed nor dropped. Each cut happens inside one such block.

    Returns:
        What was removed and how many bytes the database gave back.
    """
    memory = settings.profile.memory
    with _saver(settings) as saver:
        return prune_saver(
            saver,
            keep=keep if keep is not None else memory.checkpoints_per_thread,
            max_age_days=max_age_days if max_age_days is not None else memory.thread_max_age_days,
            now=now,
            running=running,
        )


def vacuum_checkpoints(settings: Settings) -> dict[str, Any]:
    """``VACUUM`` the checkpoint database without pruning; report its size before and after."""
    started = time.perf_counter()
    with _saver(settings) as saver:
        store = store_for(saver)
        before = store.size_bytes()
        store.vacuum()
        after = store.size_bytes()
    return {
        "backend": store.backend,
        "size_before": before,
        "size_after": after,
        "bytes_reclaimed": max(0, before - after),
        "seconds": round(time.perf_counter() - started, 4),
    }


@contextmanager
def _saver(settings: Settings) -> Iterator[BaseCheckpointSaver[Any]]:
    with open_checkpointer(settings) as saver:
        yield saver


__all__ = [
    "PruneReport",
    "RunningThreads",
    "checkpoint_path",
    "prune_checkpoints",
    "prune_saver",
    "thread_head",
    "vacuum_checkpoints",
]
