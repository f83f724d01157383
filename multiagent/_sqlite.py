"""SQLite files several processes share: switching one to WAL safely.

The lowest layer: it imports nothing of the package, so every store (metrics history, budgets,
batches, checkpoints, caches) can use it.
"""

from __future__ import annotations

import sqlite3
import time


def ensure_wal(conn: sqlite3.Connection, *, timeout_s: float = 30.0) -> None:
    """Switch the file to WAL once.

    Two processes creating the file at once can see the switch fail with "database is locked"
    without SQLite's busy handler being consulted, so it is retried here until ``timeout_s``.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.005)
