"""Every test runs with a clean environment, its own data directory and a zero-latency simulator."""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from multiagent.models.adaptive import reset_shared_controllers
from multiagent.nodes.context import clear_context_cache
from multiagent.observability.history import reset_process_metrics


def pytest_configure(config: pytest.Config) -> None:
    """Answer Ctrl-C as a foreground process does, however the suite was started.

    The suite presses Ctrl-C (SIGINT) on purpose, in this process and in the commands it starts.
    Started as a background job by a script (``pytest &``, ``( ... & )``), it inherits SIGINT
    ignored, as does every process it starts: a command without a handler of its own (Python
    installs none for a signal ignored at start) would then sit through the test's Ctrl-C.
    """
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(autouse=True)
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Clear MULTIAGENT_* / OPENAI_* variables, point MULTIAGENT_HOME at a temporary directory."""
    for name in list(os.environ):
        if name.startswith(("MULTIAGENT_", "OPENAI_", "LANGSMITH_", "LANGCHAIN_", "OTEL_")):
            if name == "MULTIAGENT_TEST_POSTGRES_URL":
                continue
            monkeypatch.delenv(name, raising=False)
    home = tmp_path / "home"
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.setenv("MULTIAGENT_HOME", str(home))
    monkeypatch.setenv("MULTIAGENT_SIM__TTFT_S", "0")
    monkeypatch.setenv("MULTIAGENT_SIM__TOKEN_LATENCY_S", "0")
    monkeypatch.chdir(work)
    reset_process_metrics()  # the process-wide store would carry counts from test to test
    clear_context_cache()  # objects built from context values hold the last test's home
    return home


@pytest.fixture(autouse=True)
def fresh_shared_controllers() -> Iterator[None]:
    """Each test starts with no shared backpressure controller, so a test may configure its own
    (a second configuration for a live controller is an error)."""
    reset_shared_controllers()
    yield
    reset_shared_controllers()


ADMIN_URL = os.environ.get("MULTIAGENT_TEST_POSTGRES_URL")


@pytest.fixture
def postgres_url(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """``MULTIAGENT_CHECKPOINT_URL`` set to a new, empty PostgreSQL database (dropped after)."""
    if not ADMIN_URL:
        pytest.skip("MULTIAGENT_TEST_POSTGRES_URL is not set (.ci/run sets it)")
    import psycopg

    name = f"multiagent_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    parts = urlsplit(ADMIN_URL)
    url = urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, parts.fragment))
    monkeypatch.setenv("MULTIAGENT_CHECKPOINT_URL", url)
    try:
        yield url
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
