"""A real ``redis-server`` on loopback for the tests that need Redis.

``MULTIAGENT_TEST_REDIS_URL`` (set by ``.ci/run``) names a running server; else a throw-away
server is started on a free loopback port with no persistence, in a temporary directory, and
stopped after the session. Tests are skipped (with the reason) only when no ``redis-server`` is
installed. Each test starts from an empty database (flushed by :func:`redis_url`).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests._procs import free_port, stop
from tests.distributed._workers import FAST, Workers
from tests.integration._fault_proxy import served_through_proxy

#: Read at import, before the autouse fixture clears MULTIAGENT_* variables.
GIVEN_URL = os.environ.get("MULTIAGENT_TEST_REDIS_URL")


def _wait_ready(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 15.0
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"redis-server exited: {log.read_text(errors='replace')[-500:]}")
        try:
            with redis.Redis.from_url(url, socket_connect_timeout=0.5) as client:
                client.ping()
                return
        except redis.exceptions.ConnectionError:
            time.sleep(0.05)
    raise RuntimeError("redis-server did not answer within 15 s")


@pytest.fixture(scope="session")
def redis_server_url() -> Iterator[str]:
    """The URL of a running Redis server (given by CI, or started here)."""
    if GIVEN_URL:
        yield GIVEN_URL
        return
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="multiagent-redis-") as folder:
        log = Path(folder) / "redis.log"
        command = [
            binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly",
            "no", "--dir", folder, "--logfile", str(log), "--protected-mode", "yes",
        ]  # fmt: skip
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        url = f"redis://127.0.0.1:{port}/0"
        try:
            _wait_ready(url, process, log)
            yield url
        finally:
            stop(process)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Iterator[pytest.TestReport]:
    """A failed test's report shows where its live workers are (their stacks and stderr)."""
    report: pytest.TestReport = yield
    pool = getattr(item, "funcargs", {}).get("workers")
    if report.when == "call" and report.failed and isinstance(pool, Workers):
        report.sections.append(("live workers", pool.stacks() or "none"))
    return report


@pytest.fixture
def redis_url(redis_server_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """``MULTIAGENT_REDIS_URL`` set to a Redis whose database is empty at the test's start."""
    with redis.Redis.from_url(redis_server_url) as client:
        client.flushdb()
    monkeypatch.setenv("MULTIAGENT_REDIS_URL", redis_server_url)
    return redis_server_url


@pytest.fixture
def workers(redis_url: str) -> Iterator[Workers]:
    """Worker subprocesses on the test's Redis, killed when the test ends."""
    pool = Workers()
    try:
        yield pool
    finally:
        pool.close()


@pytest.fixture
def sim(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The simulator server, the ``openai`` provider pointed at it, one attempt per call; the
    workers' quick settings (:data:`~tests.distributed._workers.FAST`)."""
    for name, value in FAST.items():
        monkeypatch.setenv(name, value)
    with served_through_proxy(monkeypatch, attempts=1, proxied=False) as (url, _proxy):
        yield url
