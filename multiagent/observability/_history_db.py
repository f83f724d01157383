"""The SQLite file of the metrics history: schema, connections, one-writer-at-a-time transactions.

Several processes share the file: WAL journal (readers never wait for the writer), a busy
timeout (writers queue instead of failing), ``BEGIN IMMEDIATE`` (the write lock is taken up
front, so two writers never deadlock upgrading a read lock). Readers open it read-only and
create nothing, so ``metrics show`` and ``history`` work on a home they may only read.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

from multiagent._crash import crash_point
from multiagent._sqlite import ensure_wal
from multiagent.persistence.health import read_only_uri

#: How long a writer waits for another one; a module value so tests can shorten it.
BUSY_TIMEOUT_MS = 10_000
_SCHEMA = """
CREATE TABLE IF NOT EXISTS buckets (
    start INTEGER NOT NULL, name TEXT NOT NULL, labels TEXT NOT NULL, value REAL NOT NULL,
    PRIMARY KEY (start, name, labels)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS totals (
    name TEXT NOT NULL, labels TEXT NOT NULL, value REAL NOT NULL,
    PRIMARY KEY (name, labels)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS gauges (
    start INTEGER NOT NULL, name TEXT NOT NULL, labels TEXT NOT NULL, value REAL NOT NULL,
    PRIMARY KEY (start, name, labels)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS persists (
    at REAL NOT NULL, pid INTEGER NOT NULL, host TEXT NOT NULL, series INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS persists_at ON persists (at);
"""


def connect(path: Path) -> sqlite3.Connection:
    """A connection that waits for other writers, in autocommit (transactions are explicit)."""
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    return conn


def _ensure_wal(conn: sqlite3.Connection) -> None:
    ensure_wal(conn, timeout_s=BUSY_TIMEOUT_MS / 1000)


@contextmanager
def write_transaction(path: Path) -> Iterator[sqlite3.Connection]:
    """One write transaction on the history file (created with its schema when missing)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with closing(connect(path)) as conn:
        _ensure_wal(conn)
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            yield conn
            crash_point("metrics-commit")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")


def read_rows(
    path: Path, sql: str, args: tuple[Any, ...] = (), *, row_factory: Any = None
) -> list[Any]:
    """Rows of a query; none when the file (or its schema) does not exist yet.

    A read writes nothing and creates nothing beside the file, so a home this user may only
    read (a mounted backup, another user's home) is read like any other: the file is opened
    read-only (:func:`~multiagent.persistence.health.read_only_uri`). Without a ``-wal`` file
    that is SQLite's ``immutable`` open, which takes no lock: a writer that starts, commits and
    checkpoints during the read changes the file under it, so such a read is read again. The
    live runs' file is read the same way (``row_factory``: the connection's, e.g.
    ``sqlite3.Row``).
    """
    for _attempt in range(_READ_ATTEMPTS):
        before = _version(path)
        if before is None:
            return []
        try:
            rows = _query(path, sql, args, row_factory)
        except sqlite3.DatabaseError:
            if _version(path) == before:
                raise
            continue  # a writer changed the file meanwhile: what was read may be half of it
        if _version(path) == before:
            return rows
    return _query(path, sql, args, row_factory)


#: Reads of a file that changed meanwhile, before one is taken as it is.
_READ_ATTEMPTS = 5


def _version(path: Path) -> tuple[int, int, int, bool] | None:
    """What changes when a writer writes the file (``None``: there is no file)."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    wal = path.with_name(path.name + "-wal").exists()
    return (stat.st_ino, stat.st_size, stat.st_mtime_ns, wal)


def _query(path: Path, sql: str, args: tuple[Any, ...], row_factory: Any = None) -> list[Any]:
    """One query on a read-only connection to ``path``."""
    uri = read_only_uri(path)
    with closing(sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_MS / 1000)) as conn:
        conn.row_factory = row_factory
        try:
            return list(conn.execute(sql, args))
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):  # created by a writer that has not committed
                return []
            raise
