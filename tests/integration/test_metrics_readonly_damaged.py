"""The metrics commands on a home they may only read, or whose history is damaged: reads work
and create nothing, ``metrics serve`` starts and answers the damaged parts with 503, and the
damaged file keeps every byte. Real files, real SQLite, the real CLI in a subprocess, HTTP on
127.0.0.1."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx2
import pytest
from typer.testing import CliRunner

from multiagent._metrics import MetricsStore
from multiagent.cli import app
from multiagent.dashboard.data import live_runs, threads
from multiagent.observability import _history_db
from multiagent.observability.cache_stats import cache_analytics, size_on_disk
from multiagent.observability.history import MetricsHistory, history_path, persist_metrics
from multiagent.policies import Settings, load_settings

CALL = {"provider": "sim", "model": "gpt-4o-mini", "agent": "analyst", "outcome": "ok"}
_TIMEOUT_S = 60


def _digests(home: Path) -> dict[str, str]:
    return {
        str(p.relative_to(home)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(home.rglob("*"))
        if p.is_file()
    }


def _recorded(settings: Settings, calls: int) -> None:
    store = MetricsStore()
    store.inc("model_calls_total", value=calls, labels=CALL)
    persist_metrics(settings, store=store)


def _as_a_reader(home: Path) -> list[str]:
    """The command prefix of a process that may read ``home`` and not write it.

    The home is made read-only; root writes into it anyway, so as root the process runs without
    the capabilities that override file permissions (what any other user of the machine has).
    """
    for path in [home, *home.rglob("*")]:
        mode = path.stat().st_mode
        path.chmod(mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv: a read-only home cannot be made")
    return [setpriv, "--bounding-set=-dac_override,-dac_read_search,-fowner"]


def _writable_again(home: Path) -> None:
    for path in [home, *home.rglob("*")]:
        path.chmod(path.stat().st_mode | stat.S_IWUSR)


def _cli(prefix: list[str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*prefix, sys.executable, "-m", "multiagent", *args],
        capture_output=True,
        text=True,
        timeout=_TIMEOUT_S,
        check=False,
    )


def _kill_a_writer_after_its_commit(home: Path, calls: int) -> None:
    """A process that commits ``calls`` into the history and is killed with the WAL open: its
    commit is only in the ``-wal`` file (a reader must still count it)."""
    code = (
        "import os, sqlite3, sys\n"
        "from multiagent._metrics import MetricsStore\n"
        "from multiagent.observability.history import persist_metrics\n"
        "from multiagent.policies import load_settings\n"
        "settings = load_settings(home=sys.argv[1])\n"
        "kept = sqlite3.connect(os.path.join(sys.argv[1], 'metrics.sqlite'))\n"
        "kept.execute('SELECT COUNT(*) FROM totals').fetchone()  # no checkpoint at its close\n"
        "store = MetricsStore()\n"
        f"store.inc('model_calls_total', value={calls}, labels={CALL!r})\n"
        "persist_metrics(settings, store=store)\n"
        "os.kill(os.getpid(), 9)\n"
    )
    done = subprocess.run([sys.executable, "-c", code, str(home)], timeout=_TIMEOUT_S, check=False)
    assert done.returncode == -signal.SIGKILL
    assert (home / "metrics.sqlite-wal").stat().st_size > 0


@pytest.mark.parametrize("wal_left", [False, True], ids=["checkpointed", "wal-left-by-a-kill"])
def test_show_and_history_read_a_home_they_may_only_read(
    isolated_env: Path, wal_left: bool
) -> None:
    home = isolated_env
    _recorded(load_settings(), 3)
    if wal_left:
        _kill_a_writer_after_its_commit(home, 4)
    before = _digests(home)
    reader = _as_a_reader(home)
    try:
        shown = _cli(reader, "metrics", "show", "--json")
        table = _cli(reader, "metrics", "history")
        points = _cli(reader, "metrics", "history", "--json")
    finally:
        _writable_again(home)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["calls"]["total"] == (7 if wal_left else 3)
    assert table.returncode == 0, table.stderr
    assert "gpt-4o-mini" not in table.stderr
    assert points.returncode == 0, points.stderr
    assert sum(p["calls"] for p in json.loads(points.stdout)["points"]) == (7 if wal_left else 3)
    assert _digests(home) == before  # nothing written, nothing created beside the file


def test_a_read_that_a_writer_overlapped_is_read_again(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = load_settings()
    _recorded(settings, 2)
    query = _history_db._query
    writes = [5]

    def query_then_a_writer_commits(*args: object) -> list[tuple[object, ...]]:
        rows = query(*args)  # type: ignore[arg-type]
        while writes:  # a writer commits and checkpoints as this read ends
            _recorded(settings, writes.pop())
        return rows

    monkeypatch.setattr(_history_db, "_query", query_then_a_writer_commits)
    totals = MetricsHistory(settings, store=MetricsStore()).totals(live=False)
    assert sum(s.value for s in totals if s.name == "multiagent_model_calls_total") == 7


def test_show_on_a_home_with_no_metrics_says_so_in_one_line(isolated_env: Path) -> None:
    shown = CliRunner().invoke(app, ["metrics", "show"])
    assert shown.exit_code == 0, shown.output
    assert shown.stdout.splitlines() == [f"no model calls recorded yet in {isolated_env}"]
    document = CliRunner().invoke(app, ["metrics", "show", "--json"])
    assert document.exit_code == 0
    assert json.loads(document.stdout)["source"]["last_persist"] is None
    assert not isolated_env.exists()  # a read creates no home


@contextmanager
def _serving(home: Path, prefix: list[str] | None = None) -> Iterator[tuple[str, list[str]]]:
    """``multiagent metrics serve --port 0`` on ``home`` (run under ``prefix``): its URL and,
    once stopped, its stderr lines (appended to the list yielded)."""
    process = subprocess.Popen(
        [*(prefix or []), sys.executable, "-m", "multiagent", "metrics", "serve", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "MULTIAGENT_HOME": str(home)},
    )
    errors: list[str] = []
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        assert "listening on" in first, (first, process.stderr.read() if process.stderr else "")
        yield first.strip().rsplit(" ", 1)[1], errors
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=_TIMEOUT_S)
        errors.extend((process.stderr.read() if process.stderr else "").splitlines())
        assert code == 0, errors


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_serve_starts_on_a_damaged_history_and_answers_its_parts_with_503(
    isolated_env: Path, damage: str
) -> None:
    settings = load_settings()
    _recorded(settings, 3)
    ran = CliRunner().invoke(app, ["run", "a task", "--no-stream", "--json"])
    assert ran.exit_code == 0, ran.output
    path = history_path(settings)
    data = path.read_bytes()
    path.write_bytes(b"not a database " * 400 if damage == "garbage" else data[: len(data) // 2])
    before = _digests(isolated_env)
    damaged = path.read_bytes()
    with _serving(isolated_env) as (url, errors):
        for route in ("/metrics", "/metrics/summary", "/metrics/history", "/api/overview"):
            reply = httpx2.get(f"{url}{route}", timeout=_TIMEOUT_S)
            assert reply.status_code == 503, (route, reply.text)
            detail = reply.json()["detail"]
            assert detail.startswith(f"damaged database {path}"), detail
            assert "multiagent persistence repair" in detail
            assert "\n" not in detail
        for route in ("/", "/api/runs", "/api/threads", "/metrics/cache"):
            reply = httpx2.get(f"{url}{route}", timeout=_TIMEOUT_S)
            assert reply.status_code == 200, (route, reply.text)
        assert httpx2.get(f"{url}/api/threads", timeout=_TIMEOUT_S).json()["threads"]
        assert httpx2.get(f"{url}/healthz", timeout=_TIMEOUT_S).status_code == 503
    assert path.read_bytes() == damaged
    assert {k: v for k, v in _digests(isolated_env).items() if k.startswith("metrics")} == {
        k: v for k, v in before.items() if k.startswith("metrics")
    }
    assert "Traceback" not in "\n".join(errors)
    warnings = [line for line in errors if line.startswith("warning: ")]
    assert len(warnings) == 1, errors
    assert warnings[0].startswith(f"warning: damaged database {path}: ")
    assert "multiagent persistence repair" in warnings[0]


def _prometheus_total(text: str, name: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith((f"{name}{{", f"{name} ")))  # fmt: skip


def test_serve_answers_every_read_on_a_home_it_may_only_read(isolated_env: Path) -> None:
    home = isolated_env
    ran = _cli([], "run", "a task", "--no-stream", "--json")  # another process wrote the home
    assert ran.returncode == 0, ran.stderr
    usage, thread_id = json.loads(ran.stdout)["usage"], json.loads(ran.stdout)["thread_id"]
    assert list(home.glob("cache/*/entries/cache.db-wal"))  # left open: read in WAL mode
    before = _digests(home)
    sizes = {d.name: size_on_disk(d) for d in (home / "cache").iterdir()}
    reader = _as_a_reader(home)
    answers = {}
    try:
        with _serving(home, reader) as (url, errors):
            for route in ("/metrics", "/metrics/cache", "/api/runs", "/api/threads"):
                reply = httpx2.get(f"{url}{route}", timeout=_TIMEOUT_S)
                assert reply.status_code == 200, (route, reply.text)
                answers[route] = reply.text if route == "/metrics" else reply.json()
            for route in (f"/api/threads/{thread_id}", "/api/backpressure", "/api/overview"):
                reply = httpx2.get(f"{url}{route}", timeout=_TIMEOUT_S)
                assert reply.status_code == 200, (route, reply.text)
                answers[route] = reply.json()
            health = httpx2.get(f"{url}/healthz", timeout=_TIMEOUT_S)
    finally:
        _writable_again(home)
    assert _digests(home) == before  # nothing written, nothing created beside the files
    assert "Traceback" not in "\n".join(errors)
    # said once at start; the audit record it cannot write is no warning at exit
    assert errors == [
        f"data directory {home} may only be read: serving it read-only, with no audit record "
        "of this serve"
    ]
    assert health.status_code == 503
    assert health.json()["checks"]["home"]["ok"] is False
    assert "not writable" in health.json()["checks"]["home"]["error"]
    assert health.json()["checks"]["databases"]["ok"] is True

    settings = load_settings()  # what a reader that may write sees, read after the server
    cache = answers["/metrics/cache"]
    expected = cache_analytics(settings)  # opening a cache folds and checkpoints: sizes change
    for name, directory in (("completion", "completions"), ("analysis", "analysis")):
        assert cache[name].pop("size_bytes") == sizes[directory]
        expected[name].pop("size_bytes")
    assert cache == expected
    assert cache["completion"]["present"]
    assert cache["completion"]["entries"] > 0
    assert cache["completion"]["lookups"] == usage["calls"]
    assert cache["completion"]["hits"] == usage["cache_hits"]
    text = answers["/metrics"]
    assert _prometheus_total(text, "multiagent_model_calls_total") == usage["calls"]
    assert _prometheus_total(text, "multiagent_model_tokens_total") == (
        usage["input_tokens"] + usage["output_tokens"]
    )
    entries = cache["completion"]["entries"]
    assert f'multiagent_cache_entries{{cache="completion"}} {float(entries)}' in text
    runs = answers["/api/runs"]
    assert runs == json.loads(json.dumps(live_runs(settings)))
    assert [r["thread_id"] for r in runs["finished"]] == [thread_id]
    assert runs["finished"][0]["tokens_in"] == usage["input_tokens"]
    listed = answers["/api/threads"]["threads"]
    assert listed == json.loads(json.dumps(threads(settings)))
    assert [t["thread_id"] for t in listed] == [thread_id]
    assert listed[0]["status"] == "completed"
    assert answers[f"/api/threads/{thread_id}"]["history"]
    assert answers["/api/backpressure"]["limiters"]  # the run's limiter samples
