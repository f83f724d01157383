"""The runs of one process register on PostgreSQL over one shared session, not one each.

A worker running many runs at once would otherwise hold a connection per run beside its
checkpointer's pool, and many workers exhaust the server's ``max_connections``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager

import psycopg
import pytest

from multiagent.observability.live_starts import registered_run, runs_held
from multiagent.persistence.postgres_runs import (
    APPLICATION_NAME,
    RUN_LOCK_CLASS,
    TABLE,
    PostgresRunRegistry,
)
from multiagent.policies import Settings, load_settings
from tests._procs import REPO

pytestmark = pytest.mark.postgres


def _registry_sessions(url: str) -> set[int]:
    """The backend pids of the registry's sessions on the database of ``url``."""
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = %s "
            "AND datname = current_database()",
            (APPLICATION_NAME,),
        ).fetchall()
    return {int(pid) for (pid,) in rows}


def _registered(url: str) -> dict[str, int]:
    """Each registered thread, with the backend pid holding its run's lock (0: none does)."""
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            f"SELECT s.thread_id, coalesce(l.pid, 0) FROM {TABLE} s LEFT JOIN pg_locks l "
            "ON l.locktype = 'advisory' AND l.granted AND l.classid = %s::oid "
            "AND l.objid = s.id::oid AND l.objsubid = 2 "
            "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            (RUN_LOCK_CLASS,),
        ).fetchall()
    return {str(thread): int(pid) for thread, pid in rows}


def _held_locks(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = %s::oid",
            (RUN_LOCK_CLASS,),
        ).fetchone()
    assert row is not None
    return int(row[0])


def _running_seen_by_another_process() -> dict[str, str]:
    """``running_threads`` as another process on the same database reads it."""
    code = (
        "import json; from multiagent.observability.live_starts import running_threads; "
        "from multiagent.policies import load_settings; "
        "print(json.dumps(running_threads(load_settings())))"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), *sys.path])}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    seen: dict[str, str] = json.loads(done.stdout)
    return seen


@contextmanager
def _runs_in_threads(settings: Settings, threads: list[str]) -> Iterator[list[BaseException]]:
    """A run registered on each of ``threads``, each from a thread of its own, all held for the
    ``with`` block; yields the errors they met (complete once the block has exited)."""
    registered = threading.Barrier(len(threads) + 1)
    release = threading.Event()
    errors: list[BaseException] = []

    def run(thread_id: str) -> None:
        try:
            with registered_run(settings, thread_id):
                registered.wait(timeout=60)
                release.wait(timeout=60)
        except BaseException as exc:
            errors.append(exc)
            registered.abort()

    workers = [threading.Thread(target=run, args=(t,)) for t in threads]
    for worker in workers:
        worker.start()
    try:
        try:
            registered.wait(timeout=60)
        except threading.BrokenBarrierError:
            raise AssertionError(f"a run failed to register: {errors!r}") from None
        yield errors
    finally:
        release.set()
        for worker in workers:
            worker.join(timeout=60)


def test_runs_registered_at_once_from_threads_share_one_connection(postgres_url: str) -> None:
    """Eight runs registered at once from eight threads: one registry session holds all their
    locks, and another process sees every one of them running."""
    settings = load_settings()
    threads = [f"run-{n}" for n in range(8)]
    with _runs_in_threads(settings, threads) as errors:
        sessions = _registry_sessions(postgres_url)
        assert len(sessions) == 1
        assert _registered(postgres_url) == dict.fromkeys(threads, next(iter(sessions)))
        seen = _running_seen_by_another_process()
        assert seen == dict.fromkeys(threads, f"process {os.getpid()}")
    assert errors == []
    assert _registered(postgres_url) == {}
    assert _held_locks(postgres_url) == 0
    assert _registry_sessions(postgres_url) == sessions  # kept for the process's next runs


def test_a_run_that_ends_takes_only_its_own_row_and_lock(postgres_url: str) -> None:
    """Three runs of one process; the middle one ends: its row and lock go, the other two
    stay registered on the same session."""
    settings = load_settings()
    with ExitStack() as first_and_last:
        first_and_last.enter_context(registered_run(settings, "first"))
        with registered_run(settings, "middle"):
            first_and_last.enter_context(registered_run(settings, "last"))
            (session,) = _registry_sessions(postgres_url)
            assert _registered(postgres_url) == dict.fromkeys(["first", "middle", "last"], session)
        assert _registered(postgres_url) == dict.fromkeys(["first", "last"], session)
        assert _held_locks(postgres_url) == 2
    assert _registered(postgres_url) == {}
    assert _held_locks(postgres_url) == 0


def test_concurrent_registrations_and_ends_do_not_interleave(postgres_url: str) -> None:
    """Threads register and end runs all at once while prune takes the gate now and then:
    no thread's statements land in another's gate transaction, nothing fails, nothing is left
    behind, and one session served them all."""
    settings = load_settings()
    start = threading.Barrier(9)
    errors: list[BaseException] = []

    def churn(worker: int) -> None:
        try:
            start.wait(timeout=60)
            for n in range(20):
                with registered_run(settings, f"w{worker}-{n}"):
                    pass
        except BaseException as exc:
            errors.append(exc)

    def prune() -> None:
        try:
            start.wait(timeout=60)
            for _ in range(5):
                with runs_held(settings) as running:
                    assert running == {}  # this process's own runs are not "elsewhere"
        except BaseException as exc:
            errors.append(exc)

    workers = [threading.Thread(target=churn, args=(n,)) for n in range(8)]
    workers.append(threading.Thread(target=prune))
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    assert errors == []
    assert _registered(postgres_url) == {}
    assert _held_locks(postgres_url) == 0
    assert len(_registry_sessions(postgres_url)) == 1


def test_a_broken_session_is_replaced_and_its_runs_end_quietly(postgres_url: str) -> None:
    """The server ends the shared session under a run: that run lost its registration (as a
    crashed process's run does) and ends without an error; the next run connects again."""
    settings = load_settings()
    with registered_run(settings, "before"):
        (lost,) = _registry_sessions(postgres_url)
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (lost,))
        deadline = time.monotonic() + 60  # a guard against a hang, not a measurement
        while lost in _registry_sessions(postgres_url) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert _registered(postgres_url) == {"before": 0}  # its row no longer counts
        with registered_run(settings, "after"):
            (session,) = _registry_sessions(postgres_url)
            assert session != lost
            assert _registered(postgres_url) == {"before": 0, "after": session}
            assert _running_seen_by_another_process() == {"after": f"process {os.getpid()}"}
    assert _registry_sessions(postgres_url) == {session}
    assert _held_locks(postgres_url) == 0


def _wait_until(check: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 60  # a guard against a hang, not a measurement
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def _waiting_on_a_lock(url: str, pid: int) -> bool:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", (pid,)
        ).fetchone()
    return row is not None and row[0] == "Lock"


@pytest.mark.parametrize("waits_in", ["its row's insert", "its run's lock"])
def test_a_session_ended_inside_a_registration_is_replaced_once(
    postgres_url: str, waits_in: str
) -> None:
    """The server ends the shared session while a registration is inside the gate: that
    registration is made again on a new session and counts once; the run registered on the
    ended session lost its registration and ends quietly."""
    settings = load_settings()
    registered, release = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            with registered_run(settings, "after"):
                registered.set()
                release.wait(timeout=60)
        except BaseException as exc:
            errors.append(exc)
            registered.set()

    with registered_run(settings, "before"):
        (lost,) = _registry_sessions(postgres_url)
        with psycopg.connect(postgres_url) as blocker:  # holds its locks until it commits
            if waits_in == "its row's insert":
                blocker.execute(f"LOCK TABLE {TABLE} IN SHARE MODE")
            else:  # the key of the next row: the one the registration inserts
                blocker.execute(
                    f"SELECT pg_advisory_xact_lock(%s, (SELECT max(id) + 1 FROM {TABLE}))",
                    (RUN_LOCK_CLASS,),
                )
            worker = threading.Thread(target=run)
            worker.start()
            _wait_until(lambda: _waiting_on_a_lock(postgres_url, lost))
            with psycopg.connect(postgres_url, autocommit=True) as admin:
                admin.execute("SELECT pg_terminate_backend(%s)", (lost,))
            _wait_until(lambda: lost not in _registry_sessions(postgres_url))
        try:
            assert registered.wait(timeout=60)
            assert errors == []
            (session,) = _registry_sessions(postgres_url)
            assert _registered(postgres_url) == {"before": 0, "after": session}
            assert _held_locks(postgres_url) == 1  # one registration of "after" counts
            assert _running_seen_by_another_process() == {"after": f"process {os.getpid()}"}
        finally:
            release.set()
            worker.join(timeout=60)
    assert errors == []
    assert _registered(postgres_url) == {}
    assert _held_locks(postgres_url) == 0
    assert _registry_sessions(postgres_url) == {session}


def test_a_registry_on_its_own_connection_raises_when_the_server_ended_it(
    postgres_url: str,
) -> None:
    """Only the shared session is replaced: a registry's own connection, ended by the server,
    makes its registration fail, connecting nowhere else."""
    with PostgresRunRegistry(postgres_url) as registry:
        (ended,) = _registry_sessions(postgres_url)
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (ended,))
        _wait_until(lambda: ended not in _registry_sessions(postgres_url))
        with pytest.raises(psycopg.OperationalError):
            registry.register("own")
    assert _registry_sessions(postgres_url) == set()
    assert _registered(postgres_url) == {}


def test_a_forked_child_leaves_its_parents_session_alone(postgres_url: str) -> None:
    """A child forked inside a run registers on a session of its own, and the run it
    inherited ending in the child takes nothing from the parent, whose run stays registered."""
    settings = load_settings()
    with ExitStack() as inherited:
        inherited.enter_context(registered_run(settings, "parent"))
        (parent,) = _registry_sessions(postgres_url)
        child = os.fork()
        if child == 0:  # pragma: no cover - the child reports through its exit code
            code = 1
            try:
                with registered_run(settings, "child"):
                    seen = _registered(postgres_url)
                    own = seen["child"] not in (0, parent) and seen["parent"] == parent
                inherited.close()  # the parent's run ends in the child too
                code = 0 if own else 2
            finally:
                os._exit(code)
        _pid, status = os.waitpid(child, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert _registered(postgres_url) == {"parent": parent}
    assert _registered(postgres_url) == {}
    assert _registry_sessions(postgres_url) == {parent}
