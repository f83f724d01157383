"""The runs that have a PostgreSQL checkpoint database open, kept in that database.

Machines that share one PostgreSQL checkpointer need not share a data directory, so the
directory's lock file and live runs file (:mod:`multiagent.observability.live_starts`) would
let a prune on one machine cut a thread a run on another has just read. With PostgreSQL the
same registry lives in the database: rows of ``multiagent_run_starts`` and, for the gate, a
transaction-level advisory lock that a run takes shared while it registers and prune takes
exclusively around each check-and-cut. Either is released with its transaction, or with its
connection if the process dies.

A registered run keeps its connection open until it returns, holding a session-level advisory
lock keyed by its row: a row counts while that lock is held. A process that crashed loses its
session, the lock with it, and its row no longer counts (prune deletes it); this is the
database's own "is that process alive", where the data directory asks the kernel for the pid.
A machine that vanishes without closing its connection is dropped by the server once the TCP
keepalives set here go unanswered (about a minute), not after the operating system's hours.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from types import TracebackType
from typing import Any

import psycopg

from multiagent.persistence._files import wait_for_lock
from multiagent.persistence.postgres import connect, mask_url

TABLE = "multiagent_run_starts"
#: The gate (one bigint key): shared while a run registers, exclusive around prune's cuts.
GATE_LOCK = 0x6D72756E73  # "mruns"
#: The first key of each run's own session lock (two-int form); the second is its row id.
RUN_LOCK_CLASS = 0x6D7275  # "mru"
#: Seconds a cut or a registration waits for the gate before giving up.
GATE_TIMEOUT_S = 120.0
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    id integer GENERATED ALWAYS AS IDENTITY (MAXVALUE 2147483647 CYCLE) PRIMARY KEY,
    thread_id text NOT NULL, host text NOT NULL, pid integer NOT NULL,
    started timestamptz NOT NULL DEFAULT now())
"""
#: The server drops a silent machine's session after about idle + interval x count seconds.
_KEEPALIVES = {"tcp_keepalives_idle": 30, "tcp_keepalives_interval": 10, "tcp_keepalives_count": 3}
_HELD = """EXISTS (SELECT 1 FROM pg_locks l WHERE l.locktype = 'advisory' AND l.granted
    AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
    AND l.classid = %(class)s::oid AND l.objid = s.id::oid AND l.objsubid = 2)"""


class PostgresRunRegistry:
    """The live runs of one PostgreSQL checkpoint database, over a connection of its own.

    Args:
        url: The checkpointer's ``postgresql://`` URL.
        timeout_s: Seconds to wait for the gate.
    """

    def __init__(self, url: str, *, timeout_s: float = GATE_TIMEOUT_S) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self._conn: psycopg.Connection[dict[str, Any]] | None = None

    def __enter__(self) -> PostgresRunRegistry:
        conn = connect(self.url)
        try:
            conn.execute("SET application_name = 'multiagent run registry'")
            for name, value in _KEEPALIVES.items():
                conn.execute(f"SET {name} = {int(value)}")  # constants
            # a process creating it at the same moment makes this fail, once it has committed
            with suppress(psycopg.errors.UniqueViolation, psycopg.errors.DuplicateTable):
                conn.execute(_SCHEMA)
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()  # a run's own lock goes with its session

    @property
    def conn(self) -> psycopg.Connection[dict[str, Any]]:
        """The open connection."""
        if self._conn is None:
            raise RuntimeError("the run registry is used outside its with block")
        return self._conn

    @contextmanager
    def gate(self, *, exclusive: bool) -> Iterator[None]:
        """Hold the gate for the ``with`` block, in one transaction that releases it."""
        take = "pg_try_advisory_xact_lock" if exclusive else "pg_try_advisory_xact_lock_shared"
        conn = self.conn
        with conn.transaction():

            def taken() -> bool:
                row = conn.execute(f"SELECT {take}(%s) AS got", (GATE_LOCK,)).fetchone()
                return bool(row and row["got"])

            name = f"for runs in PostgreSQL at {mask_url(self.url)}"
            wait_for_lock(taken, name=name, exclusive=exclusive, timeout_s=self.timeout_s)
            yield

    def add(self, thread_id: str) -> int:
        """Register a run of this process on ``thread_id`` (inside the shared gate)."""
        row = self.conn.execute(
            f"INSERT INTO {TABLE} (thread_id, host, pid) VALUES (%s, %s, %s) RETURNING id",
            (thread_id, socket.gethostname(), os.getpid()),
        ).fetchone()
        assert row is not None  # RETURNING gives the row
        entry = int(row["id"])
        # kept past the gate's transaction, until the run removes it or its session ends
        self.conn.execute("SELECT pg_advisory_lock(%s, %s)", (RUN_LOCK_CLASS, entry))
        return entry

    def remove(self, entry: int) -> None:
        """The run ended: its row goes, and its lock (a broken connection drops both)."""
        with suppress(psycopg.Error):
            self.conn.execute(f"DELETE FROM {TABLE} WHERE id = %s", (entry,))
            self.conn.execute("SELECT pg_advisory_unlock(%s, %s)", (RUN_LOCK_CLASS, entry))

    def running(self) -> dict[str, str]:
        """The threads other live processes run, each with who runs it (inside the gate).

        The rows of processes that are gone (their lock released with their session) are
        deleted, then not counted.
        """
        keys = {"class": RUN_LOCK_CLASS}
        self.conn.execute(f"DELETE FROM {TABLE} s WHERE NOT {_HELD}", keys)
        rows = self.conn.execute(f"SELECT thread_id, host, pid FROM {TABLE} ORDER BY id").fetchall()
        here, me = socket.gethostname(), os.getpid()
        return {
            str(r["thread_id"]): process_name(int(r["pid"]), str(r["host"]), here=here)
            for r in rows
            if (str(r["host"]), int(r["pid"])) != (here, me)
        }


def process_name(pid: int, host: str, *, here: str) -> str:
    """``process PID``, with ``on HOST`` when it runs on another machine."""
    return f"process {pid}" if host == here else f"process {pid} on {host}"


__all__ = ["GATE_LOCK", "RUN_LOCK_CLASS", "TABLE", "PostgresRunRegistry", "process_name"]
