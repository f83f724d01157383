"""The runs that have a PostgreSQL checkpoint database open, kept in that database.

Machines that share one PostgreSQL checkpointer need not share a data directory, so the
directory's lock file and live runs file (:mod:`multiagent.observability.live_starts`) would
let a prune on one machine cut a thread a run on another has just read. With PostgreSQL the
same registry lives in the database: rows of ``multiagent_run_starts`` and, for the gate, a
transaction-level advisory lock that a run takes shared while it registers and prune takes
exclusively around each check-and-cut. Either is released with its transaction, or with its
connection if the process dies.

A registered run holds, until it returns, a session-level advisory lock keyed by its row: a
row counts while that lock is held. A process that crashed loses its session, the lock with
it, and its row no longer counts (prune deletes it); this is the database's own "is that
process alive", where the data directory asks the kernel for the pid. A machine that vanishes
without closing its connection is dropped by the server once the TCP keepalives set here go
unanswered (about a minute), not after the operating system's hours.

The runs of one process share one session per database (:func:`shared_session`): a session
holds any number of advisory locks, one per row, so a worker running many runs at once, a
batch's concurrent chunks or a notebook's threads cost the server one connection beside the
checkpointer's pool, not one per run, and connect and create the table once. It is opened on
first use and kept until the process exits: runs come and go all a worker's life, and closing
it whenever none is registered would pay the connection again for the next. Its transactions
stay one thread's: a thread holds the session's lock from taking the gate to releasing it, and
around each statement otherwise, so one thread's gate never takes in another's statements.

If that session breaks (the server restarted, or ended it), every run registered on it lost
its lock, as a crashed process's runs do: they run on, unprotected, and their rows stop
counting. Their ends remove nothing and raise nothing. The process learns of the break only
when a statement fails (nothing reads an idle connection), so the next registration meets it
at the gate or inside it, and is made again, once, on a new session: nothing of the first try
counts, as its row, rolled back or left behind, held no lock that outlived the session.
A forked child leaves its parent's session alone (never used nor closed there, which would end
it for the parent) and opens its own; a run it inherited mid-way stays the parent's to remove.

Prune's exclusive gate and the ``threads`` look open a connection of their own
(``PostgresRunRegistry(url)``): prune holds the gate across a whole check-and-cut, which on the
shared session would hold up every registration and every run's end in the process.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from types import TracebackType

import psycopg

from multiagent.persistence._files import wait_for_lock
from multiagent.persistence.postgres import connect, create_table, mask_url

TABLE = "multiagent_run_starts"
#: The gate (one bigint key): shared while a run registers, exclusive around prune's cuts.
GATE_LOCK = 0x6D72756E73  # "mruns"
#: The first key of each run's own session lock (two-int form); the second is its row id.
RUN_LOCK_CLASS = 0x6D7275  # "mru"
#: Seconds a cut or a registration waits for the gate before giving up.
GATE_TIMEOUT_S = 120.0
#: What the registry's sessions call themselves in ``pg_stat_activity``.
APPLICATION_NAME = "multiagent run registry"
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


class RegistrySession:
    """A connection to the registry (its table made sure of), and the lock that keeps each of
    its transactions to one thread.

    Args:
        url: The checkpointer's ``postgresql://`` URL.
    """

    def __init__(self, url: str) -> None:
        conn = connect(url)
        try:
            conn.execute(f"SET application_name = '{APPLICATION_NAME}'")  # a constant
            for name, value in _KEEPALIVES.items():
                conn.execute(f"SET {name} = {int(value)}")  # constants
            create_table(conn, _SCHEMA)  # processes opening a fresh database at once
        except BaseException:
            conn.close()
            raise
        self.conn = conn
        self.pid = os.getpid()
        # re-entrant: a registration holds it across the gate and the statements inside it
        self.lock = threading.RLock()


_SHARED: dict[str, RegistrySession] = {}
_SHARED_LOCK = threading.Lock()
#: A parent's sessions, in a forked child: kept, as psycopg warns of an open connection
#: collected, and never closed, as that would end the parent's session.
_INHERITED: list[RegistrySession] = []


def shared_session(url: str) -> RegistrySession:
    """This process's session on the database of ``url``: opened on first use, again after
    it broke, and in a forked child, its own."""
    with _SHARED_LOCK:
        found = _SHARED.get(url)
        if found is not None and found.pid != os.getpid():
            _INHERITED.append(found)
            found = None
        if found is None or found.conn.closed:
            found = _SHARED[url] = RegistrySession(url)
        return found


def _reset_lock_in_child() -> None:
    """A parent thread may have held the lock at the fork: the child's is free."""
    global _SHARED_LOCK
    _SHARED_LOCK = threading.Lock()


os.register_at_fork(after_in_child=_reset_lock_in_child)


class PostgresRunRegistry:
    """The live runs of one PostgreSQL checkpoint database.

    Args:
        url: The checkpointer's ``postgresql://`` URL.
        timeout_s: Seconds to wait for the gate.
        shared: Register on the process's session (:func:`shared_session`), left open after
            the ``with`` block; otherwise on a connection of its own, closed after it.
    """

    def __init__(
        self, url: str, *, timeout_s: float = GATE_TIMEOUT_S, shared: bool = False
    ) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self.shared = shared
        self._session: RegistrySession | None = None

    def __enter__(self) -> PostgresRunRegistry:
        self._session = shared_session(self.url) if self.shared else RegistrySession(self.url)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        session, self._session = self._session, None
        if session is not None and not self.shared:
            session.conn.close()  # a run's own lock goes with its session

    @property
    def session(self) -> RegistrySession:
        """The open session."""
        if self._session is None:
            raise RuntimeError("the run registry is used outside its with block")
        return self._session

    @contextmanager
    def gate(self, *, exclusive: bool) -> Iterator[None]:
        """Hold the gate for the ``with`` block, in one transaction that releases it.

        The session's lock is held from the try that takes the gate to the transaction's
        end, and between tries let go, so the other threads' statements go on meanwhile.
        """
        take = "pg_try_advisory_xact_lock" if exclusive else "pg_try_advisory_xact_lock_shared"
        held = ExitStack()

        def taken() -> bool:
            session = self.session
            with ExitStack() as attempt:
                attempt.enter_context(session.lock)
                attempt.enter_context(session.conn.transaction())
                row = session.conn.execute(f"SELECT {take}(%s) AS got", (GATE_LOCK,))
                got = row.fetchone()
                if got and got["got"]:
                    held.enter_context(attempt.pop_all())
                    return True
            return False

        with held:
            name = f"for runs in PostgreSQL at {mask_url(self.url)}"
            wait_for_lock(taken, name=name, exclusive=exclusive, timeout_s=self.timeout_s)
            yield

    def register(self, thread_id: str) -> int:
        """Pass the gate shared and register a run of this process on ``thread_id``.

        On the shared session, a failure that shows the session broke (the server ended it,
        or restarted) is met by registering again on a new one, once; a second failure, any
        other error, and any on a registry's own connection are raised.
        """
        try:
            return self._register(thread_id)
        except psycopg.OperationalError:
            if not (self.shared and self.session.conn.closed):
                raise
        self._session = shared_session(self.url)
        return self._register(thread_id)

    def _register(self, thread_id: str) -> int:
        """One try of :meth:`register`."""
        with self.gate(exclusive=False):
            return self.add(thread_id)

    def add(self, thread_id: str) -> int:
        """Register a run of this process on ``thread_id`` (inside the shared gate)."""
        session = self.session
        with session.lock:
            row = session.conn.execute(
                f"INSERT INTO {TABLE} (thread_id, host, pid) VALUES (%s, %s, %s) RETURNING id",
                (thread_id, socket.gethostname(), os.getpid()),
            ).fetchone()
            assert row is not None  # RETURNING gives the row
            entry = int(row["id"])
            # kept past the gate's transaction, until the run removes it or its session ends
            session.conn.execute("SELECT pg_advisory_lock(%s, %s)", (RUN_LOCK_CLASS, entry))
        return entry

    def remove(self, entry: int) -> None:
        """The run ended: its row goes, and its lock (a broken session lost both already)."""
        session = self.session
        if session.pid != os.getpid():
            return  # registered by the parent of this forked child, on the parent's session
        with suppress(psycopg.Error), session.lock:
            session.conn.execute(f"DELETE FROM {TABLE} WHERE id = %s", (entry,))
            session.conn.execute("SELECT pg_advisory_unlock(%s, %s)", (RUN_LOCK_CLASS, entry))

    def running(self) -> dict[str, str]:
        """The threads other live processes run, each with who runs it (inside the gate).

        The rows of processes that are gone (their lock released with their session) are
        deleted, then not counted.
        """
        session = self.session
        keys = {"class": RUN_LOCK_CLASS}
        with session.lock:
            session.conn.execute(f"DELETE FROM {TABLE} s WHERE NOT {_HELD}", keys)
            rows = session.conn.execute(
                f"SELECT thread_id, host, pid FROM {TABLE} ORDER BY id"
            ).fetchall()
        here, me = socket.gethostname(), os.getpid()
        return {
            str(r["thread_id"]): process_name(int(r["pid"]), str(r["host"]), here=here)
            for r in rows
            if (str(r["host"]), int(r["pid"])) != (here, me)
        }


def process_name(pid: int, host: str, *, here: str) -> str:
    """``process PID``, with ``on HOST`` when it runs on another machine."""
    return f"process {pid}" if host == here else f"process {pid} on {host}"


__all__ = [
    "APPLICATION_NAME",
    "GATE_LOCK",
    "RUN_LOCK_CLASS",
    "TABLE",
    "PostgresRunRegistry",
    "RegistrySession",
    "process_name",
    "shared_session",
]
