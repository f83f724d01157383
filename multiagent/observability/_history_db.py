"""The SQLite file of the metrics history: schema, connections, one-writer-at-a-time transactions.

Several processes share the file: WAL journal (readers never wait for the writer), a busy
timeout (writers queue instead of failing), ``BEGIN IMMEDIATE`` (the write lock is taken up
front, so two writers never deadlock upgrading a read lock).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

from multiagent._crash import crash_point
from multiagent._sqlite import ensure_wal

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


def read_rows(path: Path, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Rows of a query; none when the file (or its schema) does not exist yet."""
    if not path.exists():
        return []
    with closing(connect(path)) as conn:
        try:
            return list(conn.execute(sql, args))
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):  # created by a writer that has not committed
                return []
            raise
