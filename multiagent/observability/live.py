"""Live runs, shared between processes: ``<home>/runs.sqlite``, appended to by every run.

A ``multiagent run`` in one process and the dashboard in another meet here. Runs write through
one :class:`LiveWriter` per process and data directory: callers queue rows (never blocking a
node on disk), a daemon thread commits them every :data:`FLUSH_S` seconds in one transaction
and once more at exit. The writer keeps one connection (opened, switched to WAL and given the
schema once per process): a run's end commits its rows at once, and opening a connection with
its schema script for each commit cost more than the commit. The same thread samples the
process's adaptive limiters once a second (limit, in flight, pause left, calls answered, 429s)
for the backpressure page.

Tables: ``runs`` (one row per thread: workflow, status, current node, tokens, cost, budget),
``events`` (node starts and ends, streamed tokens; an increasing ``id`` the dashboard follows),
``limiter`` (the samples) and ``starts`` (a run with a checkpointer from before it reads its
thread until it returns, committed at once: see :mod:`multiagent.observability.live_starts`).
Rows older than a day are trimmed.
"""

from __future__ import annotations

import atexit
import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager, suppress
from pathlib import Path
from typing import Any

from multiagent._metrics import get_metrics
from multiagent._sqlite import ensure_wal

LIVE_FILE = "runs.sqlite"
FLUSH_S = 0.2
SAMPLE_S = 1.0
KEEP_S = 24 * 3600
_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    thread_id TEXT PRIMARY KEY, workflow TEXT NOT NULL, pid INTEGER NOT NULL,
    status TEXT NOT NULL, started REAL NOT NULL, updated REAL NOT NULL, node TEXT,
    nodes TEXT NOT NULL DEFAULT '[]', tokens_in INTEGER NOT NULL DEFAULT 0,
    tokens_out INTEGER NOT NULL DEFAULT 0, cost_usd REAL NOT NULL DEFAULT 0, budget_usd REAL);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL, thread_id TEXT NOT NULL,
    kind TEXT NOT NULL, node TEXT NOT NULL DEFAULT '', agent TEXT NOT NULL DEFAULT '',
    text TEXT NOT NULL DEFAULT '');
CREATE INDEX IF NOT EXISTS events_thread ON events (thread_id, id);
CREATE TABLE IF NOT EXISTS limiter (
    at REAL NOT NULL, pid INTEGER NOT NULL, provider TEXT NOT NULL, model TEXT NOT NULL,
    "limit" REAL, in_flight REAL, paused_for_s REAL, ok_total REAL, rate_limited_total REAL);
CREATE INDEX IF NOT EXISTS limiter_at ON limiter (at);
CREATE TABLE IF NOT EXISTS starts (
    id INTEGER PRIMARY KEY AUTOINCREMENT, thread_id TEXT NOT NULL, pid INTEGER NOT NULL,
    at REAL NOT NULL);
"""


def live_path(home: Path) -> Path:
    """Where the live runs of a data directory are kept."""
    return Path(home) / LIVE_FILE


@contextmanager
def _connect(path: Path) -> Iterator[sqlite3.Connection]:
    """A writer's connection: the file created, in WAL, with its schema."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with closing(sqlite3.connect(path, timeout=10.0, isolation_level=None)) as conn:
        conn.execute("PRAGMA busy_timeout = 10000")
        ensure_wal(conn, timeout_s=10.0)
        conn.executescript(_SCHEMA)
        yield conn


def read_live(home: Path, sql: str, args: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
    """Rows of a query on the live file; none when no run wrote it yet.

    Read as the metrics history is (:func:`~multiagent.observability._history_db.read_rows`):
    read-only, creating nothing, so a dashboard given the data directory read-only shows it.
    """
    from multiagent.observability._history_db import read_rows

    return read_rows(live_path(home), sql, args, row_factory=sqlite3.Row)


class LiveWriter:
    """Queues rows for the live file and commits them from a daemon thread.

    Args:
        home: The data directory.
    """

    def __init__(self, home: Path) -> None:
        self.path = live_path(home)
        self._lock = threading.Lock()
        self._pending: list[tuple[str, tuple[Any, ...]]] = []
        self._wake = threading.Event()
        self._stopped = False
        self._last_sample = 0.0
        self._active = 0  # runs of this process in progress: limiters are sampled meanwhile
        # commits are serialised on one connection (the thread's flushes and a run's end)
        self._flush_lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._conn_pid = 0
        self._thread = threading.Thread(target=self._loop, name="multiagent-live", daemon=True)
        self._thread.start()
        atexit.register(self.close)

    def put(self, sql: str, args: tuple[Any, ...]) -> None:
        """Queue one statement; it is committed within :data:`FLUSH_S` seconds."""
        with self._lock:
            self._pending.append((sql, args))

    def begin(self) -> None:
        """A run of this process started: sample its limiters from now on."""
        with self._lock:
            self._active += 1

    def end(self) -> None:
        """A run of this process ended: write what it queued now, not a flush later."""
        with self._lock:
            self._active = max(0, self._active - 1)
        with suppress(sqlite3.Error):  # the thread retries what a busy file refused
            self.flush()

    @contextmanager
    def sampling(self) -> Iterator[None]:
        """Sample this process's limiters while the block runs, as during a run, for work that
        is not listed as a run of its own (a batch's chunks)."""
        with self._lock:
            self._active += 1
        try:
            yield
        finally:
            with self._lock:
                self._active = max(0, self._active - 1)

    def flush(self) -> None:
        """Commit what is queued (and a limiter sample when one is due) now."""
        with self._lock:
            pending, self._pending = self._pending, []
        samples = self._samples()
        if not pending and not samples:
            return
        with self._flush_lock:
            try:
                conn = self._connection()
                conn.execute("BEGIN IMMEDIATE")
                try:
                    for sql, args in pending:
                        conn.execute(sql, args)
                    conn.executemany(
                        "INSERT INTO limiter VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", samples
                    )
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")
            except BaseException:
                with self._lock:  # nothing is lost to a busy file: the rows go first next time
                    self._pending[:0] = pending
                self._drop_connection()  # a broken or removed file is opened anew next time
                raise

    def commit_now(self, sql: str, args: tuple[Any, ...]) -> int | None:
        """Run one statement and commit it at once, not queued; return its row id.

        For what another process must see before this one goes on (a run's ``starts`` row).
        """
        with self._flush_lock:
            try:
                return self._connection().execute(sql, args).lastrowid
            except BaseException:
                self._drop_connection()  # a broken or removed file is opened anew next time
                raise

    def _connection(self) -> sqlite3.Connection:
        """The writer's connection (the caller holds ``_flush_lock``), opened on first use."""
        if self._conn is not None and self._conn_pid == os.getpid() and self.path.exists():
            return self._conn
        self._drop_connection()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(
            self.path, timeout=10.0, isolation_level=None, check_same_thread=False
        )
        try:
            conn.execute("PRAGMA busy_timeout = 10000")
            ensure_wal(conn, timeout_s=10.0)
            conn.executescript(_SCHEMA)
        except BaseException:
            conn.close()
            raise
        self._conn, self._conn_pid = conn, os.getpid()
        return conn

    def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and self._conn_pid == os.getpid():
            with suppress(sqlite3.Error):
                conn.close()

    def _samples(self) -> list[tuple[Any, ...]]:
        """One row per provider+model of this process's limiters, once a second."""
        now = time.time()
        if not self._active or now - self._last_sample < SAMPLE_S:
            return []
        self._last_sample = now
        snapshot = get_metrics().snapshot()
        gauges: dict[tuple[str, str], dict[str, float]] = {}
        for series in snapshot.gauges:
            if series.name.startswith("multiagent_backpressure_") and "model" in series.labels:
                key = (series.labels.get("provider", ""), series.labels["model"])
                short = series.name.removeprefix("multiagent_backpressure_")
                gauges.setdefault(key, {})[short] = series.value
        rows = []
        for (provider, model), values in sorted(gauges.items()):
            ok = snapshot.total("model_calls_total", model=model, outcome="ok")
            limited = snapshot.total(
                "model_retries_total", model=model, kind="rate_limit"
            ) + snapshot.total("model_errors_total", model=model, kind="rate_limit")
            rows.append(
                (now, os.getpid(), provider, model, values.get("limit"),
                 values.get("in_flight"), values.get("paused_for_s"), ok, limited)
            )  # fmt: skip
        return rows

    def _loop(self) -> None:
        trimmed = False
        while not self._stopped:
            self._wake.wait(FLUSH_S)
            try:
                self.flush()
                if not trimmed and self.path.exists():
                    self._trim()
                    trimmed = True
            except sqlite3.Error:
                time.sleep(FLUSH_S)  # a busy or broken file: the rows stay queued, retried

    def _trim(self) -> None:
        oldest = time.time() - KEEP_S
        with _connect(self.path) as conn:
            conn.execute("DELETE FROM events WHERE at < ?", (oldest,))
            conn.execute("DELETE FROM limiter WHERE at < ?", (oldest,))
            conn.execute("DELETE FROM runs WHERE updated < ?", (oldest,))
            conn.execute("DELETE FROM starts WHERE at < ?", (oldest,))

    def close(self) -> None:
        """Stop the thread and commit what is left."""
        if self._stopped:
            return
        self._stopped = True
        self._wake.set()
        self._thread.join(timeout=5.0)
        with suppress(sqlite3.Error):  # at exit a locked file loses the last 0.2 s, no more
            self.flush()
        with self._flush_lock:
            self._drop_connection()


_WRITERS: dict[str, LiveWriter] = {}
_WRITERS_LOCK = threading.Lock()


def live_writer(home: Path) -> LiveWriter:
    """The process's writer for ``home`` (started on first use)."""
    key = str(Path(home).resolve())
    with _WRITERS_LOCK:
        found = _WRITERS.get(key)
        if found is None:
            found = _WRITERS[key] = LiveWriter(Path(home))
        return found


def to_json(value: Any) -> str:
    """Compact JSON for a text column."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def running_elsewhere(home: Path) -> dict[str, int]:
    """The threads that another live process is running now, each with that process's id.

    Every run keeps its row in the live runs file while it runs, and a run with a checkpointer
    its row in ``starts`` from before it reads its thread; a process killed mid-run leaves its
    rows with a pid that is gone, or taken since by a process that started after the row's last
    update (the pid reused), and its thread is not listed here.
    """
    from multiagent.persistence.scheduler_state import pid_alive

    rows = [
        *read_live(home, "SELECT thread_id, pid, updated FROM runs WHERE status = 'running'"),
        *read_live(home, "SELECT thread_id, pid, at AS updated FROM starts ORDER BY id"),
    ]
    return {
        str(row["thread_id"]): int(row["pid"])
        for row in rows
        if int(row["pid"]) != os.getpid()
        and pid_alive(int(row["pid"]), since=float(row["updated"]))  # its process wrote it
    }
