"""Checkpoint retention on both backends: one suite, run on SQLite and on a real PostgreSQL.

The PostgreSQL half needs ``MULTIAGENT_TEST_POSTGRES_URL`` (``.ci/run`` starts a server on
127.0.0.1 and sets it); each test gets a database of its own.
"""

from __future__ import annotations

import json
import operator
import os
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit, urlunsplit

import pytest
from langgraph.graph import END, START, StateGraph
from langgraph.types import Command, interrupt
from typer.testing import CliRunner
from typing_extensions import TypedDict

from multiagent._crash import CRASH_GO_ENV
from multiagent.cli import app as cli_app
from multiagent.errors import UsageError
from multiagent.observability.live import live_writer
from multiagent.persistence.checkpointer import open_checkpointer
from multiagent.persistence.pruning import prune_checkpoints, prune_saver
from multiagent.persistence.status import checkpoint_report
from multiagent.policies import load_settings
from tests._procs import park_at

ADMIN_URL = os.environ.get("MULTIAGENT_TEST_POSTGRES_URL")


class Steps(TypedDict):
    log: Annotated[list[str], operator.add]


def _step(name: str) -> Any:
    return lambda _state: {"log": [name]}


def _ask(_state: Steps) -> dict[str, list[str]]:
    answer = interrupt("approve?")
    return {"log": [f"ask:{answer}"]}


def _graph() -> StateGraph[Steps]:
    graph = StateGraph(Steps)
    graph.add_node("a", _step("a"))
    graph.add_node("b", _step("b"))
    graph.add_node("ask", _ask)
    graph.add_node("done", _step("done"))
    graph.add_edge(START, "a")
    graph.add_edge("a", "b")
    graph.add_edge("b", "ask")
    graph.add_edge("ask", "done")
    graph.add_edge("done", END)
    return graph


def _with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, parts.fragment))


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    if request.param == "sqlite":
        yield "sqlite"
        return
    if not ADMIN_URL:
        pytest.skip("MULTIAGENT_TEST_POSTGRES_URL is not set (.ci/run sets it)")
    import psycopg

    name = f"multiagent_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    monkeypatch.setenv("MULTIAGENT_CHECKPOINT_URL", _with_database(ADMIN_URL, name))
    try:
        yield "postgres"
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _run_threads(app: Any) -> dict[str, Any]:
    """Two finished threads (run twice each) and one waiting on an interrupt."""
    for thread in ("done-1", "done-2"):
        config = {"configurable": {"thread_id": thread}}
        for _ in range(2):
            app.invoke({"log": ["start"]}, config)
            app.invoke(Command(resume="yes"), config)
    waiting = {"configurable": {"thread_id": "waiting"}}
    app.invoke({"log": ["start"]}, waiting)
    assert app.get_state(waiting).interrupts
    return {
        t: app.get_state({"configurable": {"thread_id": t}}).values for t in ("done-1", "done-2")
    }


def _counts(saver: Any) -> dict[str, int]:
    from multiagent.persistence.pruning import store_for

    return store_for(saver).thread_counts()


def test_pruning_keeps_the_last_checkpoints_and_what_an_interrupt_needs(backend: str) -> None:
    settings = load_settings()
    with open_checkpointer(settings) as saver:
        app = _graph().compile(checkpointer=saver)
        finished = _run_threads(app)
        before = _counts(saver)
        assert min(before.values()) > 2
        report = prune_saver(saver, keep=2, max_age_days=30)
        after = _counts(saver)
        assert report.backend == backend
        assert report.threads_trimmed == ["done-1", "done-2", "waiting"]
        assert report.checkpoints_before == sum(before.values())
        assert report.checkpoints_after == sum(after.values()) < report.checkpoints_before
        # SQLite keeps the newest N; PostgresSaver.prune keeps the latest one
        expected = 2 if backend == "sqlite" else 1
        assert after == {"done-1": expected, "done-2": expected, "waiting": expected}
        for thread, values in finished.items():
            assert app.get_state({"configurable": {"thread_id": thread}}).values == values
        waiting = {"configurable": {"thread_id": "waiting"}}
        assert [i.value for i in app.get_state(waiting).interrupts] == ["approve?"]
        resumed = app.invoke(Command(resume="ok"), waiting)
        assert resumed["log"] == ["start", "a", "b", "ask:ok", "done"]
        assert report.bytes_before > 0
        assert report.bytes_after > 0
        if backend == "sqlite":
            assert report.bytes_reclaimed > 0  # VACUUM gave the pages back


def test_old_threads_go_unless_an_interrupt_waits_on_them(backend: str) -> None:
    settings = load_settings()
    with open_checkpointer(settings) as saver:
        app = _graph().compile(checkpointer=saver)
        _run_threads(app)
        fresh = prune_saver(saver, keep=50, max_age_days=30)
        assert fresh.threads_deleted == []
        assert fresh.threads_trimmed == []
        later = datetime.now(UTC) + timedelta(days=31)
        report = prune_saver(saver, keep=50, max_age_days=30, now=later)
        assert report.threads_deleted == ["done-1", "done-2"]
        assert report.kept_for_interrupts == ["waiting"]
        assert set(_counts(saver)) == {"waiting"}
        assert app.get_state({"configurable": {"thread_id": "done-1"}}).values == {}
        resumed = app.invoke(Command(resume="late"), {"configurable": {"thread_id": "waiting"}})
        assert resumed["log"][-2:] == ["ask:late", "done"]


def test_an_age_beyond_the_calendar_keeps_every_thread(backend: str) -> None:
    # `prune --max-age-days 1e6` (or the profile's) reached before year 1: a traceback
    from typer.testing import CliRunner

    from multiagent.cli import app

    with open_checkpointer(load_settings()) as saver:
        _run_threads(_graph().compile(checkpointer=saver))
        before = _counts(saver)
        for days in (1e6, 1e300):
            assert prune_saver(saver, keep=50, max_age_days=days).threads_deleted == []
    done = CliRunner().invoke(app, ["persistence", "prune", "--max-age-days", "1e300"])
    assert done.exit_code == 0, done.output
    with open_checkpointer(load_settings()) as saver:
        assert _counts(saver) == before


def test_limits_come_from_the_profile_and_status_counts(
    backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MULTIAGENT_MEMORY__CHECKPOINTS_PER_THREAD", "3")
    monkeypatch.setenv("MULTIAGENT_MEMORY__THREAD_MAX_AGE_DAYS", "7")
    settings = load_settings()
    with open_checkpointer(settings) as saver:
        _run_threads(_graph().compile(checkpointer=saver))
        total = sum(_counts(saver).values())
    status = checkpoint_report(settings)
    assert status["backend"] == backend
    assert (status["threads"], status["checkpoints"]) == (3, total)
    assert status["size_bytes"] > 0
    report = prune_checkpoints(settings)
    assert (report.keep_per_thread, report.max_age_days) == (3, 7.0)
    assert report.checkpoints_after < total
    assert checkpoint_report(settings)["checkpoints"] == report.checkpoints_after


def test_an_unreachable_postgres_url_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MULTIAGENT_CHECKPOINT_URL", "postgresql://someone:secret@127.0.0.1:1/db")
    settings = load_settings()
    with pytest.raises(UsageError) as caught, open_checkpointer(settings):
        pass
    message = str(caught.value)
    assert message.startswith("cannot connect to PostgreSQL at postgresql://***@127.0.0.1:1/db")
    assert "secret" not in message
    assert "\n" not in message


def _paused_at(point: str, *args: str, tmp_path: Path) -> tuple[subprocess.Popen[bytes], Path]:
    """``multiagent ARGS`` in a subprocess, once it waits at ``point``; and the file that lets
    it go on."""
    go = tmp_path / f"go-{point}"
    env = {CRASH_GO_ENV: str(go)}
    return park_at(point, *args, tmp_path=tmp_path, env=env, stdout=subprocess.PIPE), go


def _finish(child: subprocess.Popen[bytes], go: Path) -> tuple[int, str, str]:
    go.touch()
    out, err = child.communicate(timeout=180)
    return child.returncode, out.decode(), err.decode()


def _thread_checkpoints(thread_id: str) -> int:
    with open_checkpointer(load_settings()) as saver:
        return len(list(saver.list({"configurable": {"thread_id": thread_id}})))


def _prune_while_busy_resumes(
    busy: int,
    *,
    start: Callable[..., tuple[subprocess.Popen[bytes], Path]],
    tmp_path: Path,
) -> None:
    """Prune looks; a run (``start``: here, or on another machine) resumes ``busy`` inside
    prune's window, after its look and before its cut; prune goes on. The run is seen: ``idle``
    alone is deleted, ``busy`` (``busy`` checkpoints) left whole, and the run then completes."""
    prune, prune_go = _paused_at(
        "prune-listed", "persistence", "prune", "--max-age-days", "0", "--json", tmp_path=tmp_path
    )
    try:
        run, run_go = start(
            "run-registered", "run", "--thread", "busy", "--resume", "--no-stream", "--json",
            tmp_path=tmp_path,
        )  # fmt: skip
        try:
            code, out, err = _finish(prune, prune_go)
            assert code == 0, err
            report = json.loads(out)
            assert report["threads_deleted"] == ["idle"]
            assert report["skipped"] == {"busy": f"running in process {run.pid}"}
            assert _thread_checkpoints("busy") == busy
            code, out, err = _finish(run, run_go)
            assert code == 0, err
            assert json.loads(out)["thread_id"] == "busy"
        finally:
            if run.poll() is None:
                run.kill()
                run.wait()
    finally:
        if prune.poll() is None:
            prune.kill()
            prune.wait()


def test_a_run_started_after_prune_looked_keeps_its_thread(
    backend: str, isolated_env: Path, tmp_path: Path
) -> None:
    """Prune reads which threads run, a run resumes one of them, prune goes on to cut it: the
    run is seen, and its thread left whole."""
    busy = _two_threads()
    live_writer(isolated_env).flush()
    _prune_while_busy_resumes(busy, start=_paused_at, tmp_path=tmp_path)
    assert _thread_checkpoints("busy") >= busy
    assert _thread_checkpoints("idle") == 0


def _elsewhere(point: str, *args: str, tmp_path: Path) -> tuple[subprocess.Popen[bytes], Path]:
    """:func:`_paused_at` with a data directory of its own: another machine on the database."""
    go = tmp_path / f"go-{point}"
    env = {CRASH_GO_ENV: str(go), "MULTIAGENT_HOME": str(tmp_path / "other-machine")}
    return park_at(point, *args, tmp_path=tmp_path, env=env, stdout=subprocess.PIPE), go


def _two_threads() -> int:
    """Threads ``busy`` and ``idle``, made here; the checkpoints ``busy`` has."""
    for thread in ("busy", "idle"):
        made = CliRunner().invoke(
            cli_app, ["run", "Plan a launch", "--agents", "critic", "--thread", thread,
                      "--no-stream", "--memory", "off"],
        )  # fmt: skip
        assert made.exit_code == 0, made.output
    busy = _thread_checkpoints("busy")
    assert busy > 0
    return busy


def _prune_here() -> dict[str, Any]:
    pruned = CliRunner().invoke(cli_app, ["persistence", "prune", "--max-age-days", "0", "--json"])
    assert pruned.exit_code == 0, pruned.output
    report: dict[str, Any] = json.loads(pruned.stdout)
    return report


@pytest.mark.postgres
def test_a_run_on_another_machine_keeps_its_thread_until_it_ends(
    postgres_url: str, tmp_path: Path
) -> None:
    """Two data directories, one PostgreSQL: prune looks, a run on the other machine resumes a
    thread, prune goes on to cut it. The run is seen (its registration is in the database),
    its thread left whole; once it ended, the thread is pruned like any other."""
    busy = _two_threads()
    _prune_while_busy_resumes(busy, start=_elsewhere, tmp_path=tmp_path)
    assert _thread_checkpoints("busy") >= busy
    report = _prune_here()
    assert report["threads_deleted"] == ["busy"]
    assert report["skipped"] == {}
    assert _thread_checkpoints("busy") == 0


def _registered_sessions(url: str) -> int:
    """Sessions holding a run's registration lock in the database of ``url``."""
    import psycopg

    from multiagent.persistence.postgres_runs import RUN_LOCK_CLASS

    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
            "AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
            "AND classid = %s::oid AND objsubid = 2",
            (RUN_LOCK_CLASS,),
        ).fetchone()
    assert row is not None
    return int(row[0])


@pytest.mark.postgres
def test_a_killed_run_on_another_machine_does_not_keep_its_thread(
    postgres_url: str, tmp_path: Path
) -> None:
    """A run on another machine dies with its registration in the database: its session goes,
    and with it what kept prune off its thread."""
    import psycopg

    from multiagent.persistence.postgres_runs import TABLE

    busy = _two_threads()
    run, _go = _elsewhere(
        "run-registered", "run", "--thread", "busy", "--resume", "--no-stream", "--json",
        tmp_path=tmp_path,
    )  # fmt: skip
    try:
        report = _prune_here()
        assert report["threads_deleted"] == ["idle"]
        assert report["skipped"] == {"busy": f"running in process {run.pid}"}
        assert _thread_checkpoints("busy") == busy
        assert _registered_sessions(postgres_url) == 1
    finally:
        run.kill()
        run.wait()
    deadline = time.monotonic() + 60  # the server ends the dead session: a guard, not a measure
    while _registered_sessions(postgres_url) and time.monotonic() < deadline:
        time.sleep(0.02)
    report = _prune_here()
    assert report["threads_deleted"] == ["busy"]
    assert report["skipped"] == {}
    assert _thread_checkpoints("busy") == 0
    with psycopg.connect(postgres_url) as conn:  # the dead run's row went with the prune
        assert conn.execute(f"SELECT count(*) FROM {TABLE}").fetchone() == (0,)


@pytest.mark.postgres
def test_a_run_on_another_machine_is_not_resumed_beside_and_shows_running(
    postgres_url: str, tmp_path: Path
) -> None:
    """While a run on another machine (another data directory, the same PostgreSQL) holds a
    thread, a resume here is refused and ``threads`` shows it running; once it ended, both
    read the thread as they would any other."""
    _two_threads()
    run, run_go = _elsewhere(
        "run-registered", "run", "--thread", "busy", "--resume", "--no-stream", "--json",
        tmp_path=tmp_path,
    )  # fmt: skip
    try:
        beside = CliRunner().invoke(
            cli_app, ["run", "--thread", "busy", "--resume", "--no-stream", "--memory", "off"]
        )
        assert beside.exit_code == 2, beside.output
        assert f"thread 'busy' is running in process {run.pid};" in beside.output
        listed = CliRunner().invoke(cli_app, ["threads", "list", "--json"])
        assert listed.exit_code == 0, listed.output
        statuses = {row["thread_id"]: row["status"] for row in json.loads(listed.stdout)["threads"]}
        assert statuses["busy"] == "running"
        assert statuses["idle"] != "running"
        code, _out, err = _finish(run, run_go)
        assert code == 0, err
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    listed = CliRunner().invoke(cli_app, ["threads", "list", "--json"])
    assert {row["status"] for row in json.loads(listed.stdout)["threads"]} == {"completed"}
