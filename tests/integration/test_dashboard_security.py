"""Who may read and act: loopback by default, the token off loopback and for every action,
CSRF and DNS-rebinding refused, no raw PII on any page."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest
from typer.testing import CliRunner

from multiagent._serve import serve_in_thread
from multiagent.cli import app
from multiagent.dashboard import actions
from multiagent.dashboard.data import thread_detail
from multiagent.observability.history import MetricsHistory
from multiagent.observability.live_recorder import shown_text
from multiagent.observability.server import create_metrics_app, run_metrics_server
from multiagent.observability.summary import summarize
from multiagent.policies import Settings, load_settings

TOKEN = "s3cret-token-for-the-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
READS = ("/healthz", "/metrics", "/metrics/summary", "/api/runs", "/api/threads",
         "/api/overview?hours=1", "/api/backpressure")  # fmt: skip


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings(home=tmp_path / "home")


@pytest.fixture
def public_url(settings: Settings) -> Iterator[str]:
    """The app as a non-loopback server builds it, listening on 127.0.0.1 for the test."""
    built = create_metrics_app(settings, token=TOKEN, public=True)
    with serve_in_thread(built, host="127.0.0.1", port=0, what="public test server") as url:
        yield url


def test_a_non_loopback_host_without_a_token_refuses_to_start(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MULTIAGENT_METRICS_TOKEN", raising=False)
    for command in (["metrics", "serve"], ["dashboard"]):
        result = CliRunner().invoke(app, [*command, "--host", "0.0.0.0", "--port", "0"])
        assert result.exit_code == 2, result.output
        assert result.stderr.count("\n") == 1
        assert "MULTIAGENT_METRICS_TOKEN" in result.stderr
        assert "Traceback" not in result.output
    monkeypatch.setenv("MULTIAGENT_METRICS_TOKEN", "short")
    result = CliRunner().invoke(app, ["metrics", "serve", "--host", "0.0.0.0"])
    assert result.exit_code == 2
    assert "at least 16 characters" in result.stderr


def test_off_loopback_every_read_needs_the_token(public_url: str) -> None:
    for path in READS:
        assert httpx2.get(public_url + path).status_code == 401, path
        wrong = httpx2.get(public_url + path, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401, path
        assert httpx2.get(public_url + path, headers=AUTH).status_code == 200, path
    # the page shell holds no data: it loads, and asks for the token
    assert httpx2.get(public_url + "/").status_code == 200


def test_a_token_with_non_ascii_bytes_is_refused_not_a_server_error(
    settings: Settings, public_url: str
) -> None:
    odd = {"Authorization": "Bearer caf\xe9-token".encode("latin-1")}
    assert httpx2.get(public_url + "/metrics", headers=odd).status_code == 401
    with run_metrics_server(settings, token=TOKEN) as url:
        assert httpx2.post(f"{url}/api/threads/t/approve", headers=odd).status_code == 401


def test_on_loopback_reads_are_open_and_actions_need_the_token(settings: Settings) -> None:
    with run_metrics_server(settings, token=TOKEN) as url:
        for path in READS:
            assert httpx2.get(url + path).status_code == 200, path
        action = f"{url}/api/threads/some-thread/approve"
        assert httpx2.post(action).status_code == 401
        assert httpx2.post(action, headers={"Authorization": "Bearer wrong"}).status_code == 401
        # with the token it reaches the thread (there is none: 409), not the door
        assert httpx2.post(action, headers=AUTH).status_code == 409
        cross = httpx2.post(action, headers={**AUTH, "Origin": "http://evil.example"})
        assert cross.status_code == 403
        same = httpx2.post(action, headers={**AUTH, "Origin": url})
        assert same.status_code == 409
        rebound = httpx2.get(url + "/api/runs", headers={"Host": "evil.example:80"})
        assert rebound.status_code == 403


def test_without_a_configured_token_no_action_is_possible(settings: Settings) -> None:
    with run_metrics_server(settings) as url:
        reply = httpx2.post(f"{url}/api/threads/t/resume", headers=AUTH)
    assert reply.status_code == 403
    assert "MULTIAGENT_METRICS_TOKEN" in reply.json()["detail"]


def test_the_page_forbids_inline_scripts_and_framing(settings: Settings) -> None:
    with run_metrics_server(settings) as url:
        policy = httpx2.get(url + "/").headers["content-security-policy"]
    assert "script-src 'self';" in policy
    assert "frame-ancestors 'none'" in policy


def test_streamed_text_is_redacted_and_never_shows_half_an_address() -> None:
    assert "jane.doe@example.com" not in shown_text("mail jane.doe@example.com now", final=True)
    assert "[REDACTED_EMAIL]" in shown_text("mail jane.doe@example.com now", final=True)
    partial = shown_text("write to jane.doe@exa", final=False)
    assert "jane" not in partial
    assert partial == "write to "


@pytest.mark.slow
def test_no_raw_pii_on_the_pages_of_a_run_that_had_some(isolated_env: Path) -> None:
    email, phone = "jane.doe@example.com", "+44 20 7946 0958"
    task = f"Reply to {email} or call {phone} about the bakery launch"
    done = subprocess.run(
        [sys.executable, "-m", "multiagent", "run", task, "--thread", "pii-1"],
        capture_output=True, text=True, timeout=180, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    with run_metrics_server(load_settings(home=isolated_env)) as url:
        pages = [httpx2.get(url + path).text for path in
                 ("/api/runs", "/api/threads", "/api/threads/pii-1")]  # fmt: skip
        history = httpx2.get(url + "/api/threads/pii-1").json()["history"]
        for checkpoint in history:
            at = httpx2.get(url + "/api/threads/pii-1", params={"checkpoint_id":
                            checkpoint["checkpoint_id"]})  # fmt: skip
            pages.append(at.text)
    assert len(pages) > 3
    for text in pages:
        assert email not in text
        # the number in any of its shapes (a bare "7946" may be a timestamp's microseconds)
        for shape in ("7946 0958", "7946-0958", "79460958"):
            assert shape not in text


@pytest.mark.slow
def test_a_run_continued_from_the_dashboard_leaves_its_counts_in_the_history(
    isolated_env: Path,
) -> None:
    waiting = subprocess.run(
        [sys.executable, "-m", "multiagent", "run", "Plan a bakery launch", "--thread", "t-ok",
         "--approve", "--json"],
        capture_output=True, text=True, timeout=180, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert '"awaiting_approval"' in waiting.stdout, waiting.stderr
    settings = load_settings()
    before = MetricsHistory(settings).totals(live=False)
    with run_metrics_server(settings, token=TOKEN) as url:
        reply = httpx2.post(f"{url}/api/threads/t-ok/approve", headers=AUTH)
        assert reply.status_code == 202, reply.text
        worker = actions._RUNNING.get("t-ok")
        if worker is not None:
            worker.join(timeout=120)
        assert thread_detail(settings, "t-ok", None)["state"]["status"] == "completed"
    after = MetricsHistory(settings).totals(live=False)  # what another process reads
    calls = [summarize(t)["calls"]["total"] for t in (before, after)]
    assert calls[1] > calls[0]  # the approved run's calls, persisted by the server
