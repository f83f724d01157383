"""Processes that open a fresh PostgreSQL database at once each create our tables there.

``CREATE TABLE IF NOT EXISTS`` checks, then creates: creators that start together all go on to
create, and all but one fail (UniqueViolation on the table's type or name, DuplicateTable).
Each creator here has a connection of its own, as another process would; a few rounds, each on
a new database, make the collision all but certain.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from langgraph.checkpoint.postgres import PostgresSaver

from multiagent.persistence.postgres import connect
from multiagent.persistence.postgres_runs import TABLE, PostgresRunRegistry, RegistrySession
from multiagent.persistence.run_usage import record_run, recorded_runs

pytestmark = pytest.mark.postgres

CREATORS = 16
ROUNDS = 8


@pytest.fixture
def admin_url() -> str:
    url = os.environ.get("MULTIAGENT_TEST_POSTGRES_URL")
    if not url:
        pytest.skip("MULTIAGENT_TEST_POSTGRES_URL is not set (.ci/run sets it)")
    return url


@contextmanager
def _fresh_database(admin_url: str) -> Iterator[str]:
    """The URL of a new, empty database, dropped after the ``with`` block."""
    name = f"multiagent_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    parts = urlsplit(admin_url)
    try:
        yield urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, parts.fragment))
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _at_once(work: Callable[[int], None]) -> list[BaseException]:
    """``work(n)`` for each creator ``n``, each on a thread of its own, started together;
    the errors they met."""
    start = threading.Barrier(CREATORS)
    errors: list[BaseException] = []

    def creator(n: int) -> None:
        try:
            start.wait(timeout=60)
            work(n)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=creator, args=(n,)) for n in range(CREATORS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return errors


def _tables_named(url: str, name: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_class WHERE relname = %s AND relkind = 'r'", (name,)
        ).fetchone()
    assert row is not None
    return int(row[0])


def _open_sessions_at_once(url: str) -> None:
    sessions: list[RegistrySession] = []
    try:
        assert _at_once(lambda _n: sessions.append(RegistrySession(url))) == []
    finally:
        for session in sessions:
            session.conn.close()


def _record_at_once(url: str) -> dict[str, dict[str, int]]:
    """Each creator's run recorded through a checkpointer of its own; the runs then read."""
    conns = [connect(url) for _ in range(CREATORS)]
    try:
        savers = [PostgresSaver(conn) for conn in conns]

        def record(n: int) -> None:
            record_run(savers[n], thread_id="t", run_id=f"run-{n}", totals={"calls": n})

        assert _at_once(record) == []
        return recorded_runs(savers[0], "t")
    finally:
        for conn in conns:
            conn.close()


def test_registry_sessions_opened_at_once_on_a_fresh_database(admin_url: str) -> None:
    """Sixteen processes open their run registry session together: each gets its session, the
    table is there once, and a run registers."""
    for _ in range(ROUNDS):
        with _fresh_database(admin_url) as url:
            _open_sessions_at_once(url)
            assert _tables_named(url, TABLE) == 1
            with PostgresRunRegistry(url) as registry:
                registry.register("first")
                assert registry.running() == {}  # its own process's run is not "elsewhere"


def test_run_usage_recorded_at_once_on_a_fresh_database(admin_url: str) -> None:
    """Sixteen processes, each with its own checkpointer, record their first run's spend
    together: every record is kept, none fails creating the table."""
    for _ in range(ROUNDS):
        with _fresh_database(admin_url) as url:
            runs = _record_at_once(url)
            assert runs == {f"run-{n}": {"calls": n} for n in range(CREATORS)}
            assert _tables_named(url, "multiagent_run_usage") == 1
