"""The metrics server when things go wrong around it, over real HTTP on 127.0.0.1: a damaged
history or live runs file, a ``HEAD`` from an uptime check, a stop with the dashboard open."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest
from typer.testing import CliRunner

from multiagent._metrics import MetricsStore
from multiagent.cli import app
from multiagent.observability.history import history_path, persist_metrics
from multiagent.observability.live import live_path
from multiagent.observability.server import run_metrics_server
from multiagent.policies import Settings, load_settings

runner = CliRunner()
CALL = {"provider": "sim", "model": "gpt-4o-mini", "agent": "analyst", "outcome": "ok"}
READS = ("/metrics", "/metrics/summary", "/metrics/history", "/api/overview", "/api/runs")


@pytest.fixture
def settings() -> Settings:
    return load_settings()


@pytest.fixture
def url(settings: Settings) -> Iterator[str]:
    store = MetricsStore()
    store.inc("model_calls_total", labels=CALL)
    persist_metrics(settings, store=store)
    with run_metrics_server(settings, store=store) as base:
        yield base


def _first_event(url: str, kind: str) -> dict[str, object]:
    """The data of the first ``kind`` event of the dashboard's stream."""
    with httpx2.stream("GET", f"{url}/api/stream", timeout=10) as reply:
        assert reply.status_code == 200
        seen = False
        for line in reply.iter_lines():
            if line == f"event: {kind}":
                seen = True
            elif seen and line.startswith("data: "):
                data: dict[str, object] = json.loads(line[6:])
                return data
    raise AssertionError(f"the stream ended without a {kind} event")


def test_a_damaged_history_or_live_file_is_a_503_naming_it(url: str, settings: Settings) -> None:
    history_path(settings).write_bytes(b"not a database " * 400)
    live_path(settings.home).write_bytes(b"not a database " * 400)
    for path in READS:
        reply = httpx2.get(f"{url}{path}")
        assert reply.status_code == 503, (path, reply.text)
        detail = reply.json()["detail"]
        assert detail.startswith(f"damaged database {history_path(settings)}"), detail
        assert "multiagent persistence repair" in detail
    problem = _first_event(url, "problem")
    assert str(problem["detail"]).startswith("damaged database ")
    health = httpx2.get(f"{url}/healthz")  # still serving, and saying what is wrong
    assert health.status_code == 503
    assert health.json()["checks"]["databases"]["ok"] is False
    assert httpx2.get(f"{url}/").status_code == 200


def test_an_unknown_thread_is_a_404_and_a_checkpointer_that_cannot_be_opened_a_503(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    ran = runner.invoke(app, ["run", "a task", "--thread", "t-1", "--no-stream", "--json"])
    assert ran.exit_code == 0, ran.output
    unknown = httpx2.get(f"{url}/api/threads/t-2")
    assert unknown.status_code == 404
    assert unknown.json()["detail"].startswith("unknown thread 't-2'")
    no_checkpoint = httpx2.get(f"{url}/api/threads/t-1", params={"checkpoint_id": "nope"})
    assert no_checkpoint.status_code == 404
    assert httpx2.get(f"{url}/api/threads/t-1").status_code == 200
    monkeypatch.setenv("MULTIAGENT_CHECKPOINT_URL", "postgresql://nobody@127.0.0.1:1/none")
    with run_metrics_server(load_settings(), store=MetricsStore()) as down:
        for path in ("/api/threads", "/api/threads/t-1"):
            reply = httpx2.get(f"{down}{path}", timeout=30)
            assert reply.status_code == 503, (path, reply.text)
            assert reply.json()["detail"].startswith("cannot connect to PostgreSQL at "), path


@pytest.mark.parametrize(
    ("path", "kind"),
    [
        ("/healthz", "application/json"),
        ("/metrics", "text/plain; version=0.0.4"),
        ("/metrics/summary", "application/json"),
        ("/", "text/html"),
        ("/api/stream", "text/event-stream"),
    ],
)
def test_head_answers_every_get_with_its_headers_and_no_body(
    url: str, path: str, kind: str
) -> None:
    reply = httpx2.head(f"{url}{path}", timeout=10)
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith(kind)
    assert reply.content == b""
    if path != "/api/stream":  # the length of the body a GET would send
        assert int(reply.headers["content-length"]) > 0


def test_sigterm_with_the_dashboard_open_stops_without_a_traceback(isolated_env: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "multiagent", "metrics", "serve", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    stopped = False
    try:
        assert process.stdout is not None
        base = process.stdout.readline().strip().rsplit(" ", 1)[1]
        with httpx2.stream("GET", f"{base}/api/stream", timeout=30) as reply:
            lines = reply.iter_lines()
            assert next(lines) == "event: live"
            process.send_signal(signal.SIGTERM)
            stopped = True
            list(lines)  # the server ends the stream as it stops
    finally:
        if not stopped:  # once: a second SIGTERM would find the default handler back
            process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=15)
    errors = process.stderr.read() if process.stderr else ""
    assert code == 0, errors
    assert "Traceback" not in errors
    assert "Cancel" not in errors
