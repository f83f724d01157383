"""A real ``langgraph dev`` server on loopback, started once per module from ``langgraph.json``.

The server reads the project's ``langgraph.json`` (paths made absolute, so it runs in a
temporary directory) and runs in its own process group with its own data directory, the
simulated provider and every outbound feature switched off (CLI analytics, LangSmith tracing,
the browser), so the suite needs no network. It is stopped (the whole group) when the module's
tests are done.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests._procs import free_port

ROOT = Path(__file__).resolve().parents[2]
#: How long the server may take to import the graphs and answer ``/ok`` on a busy machine.
START_TIMEOUT_S = 180.0
#: Variables of the test process the server must not inherit (they would change its settings).
_DROPPED = ("MULTIAGENT_", "OPENAI_", "LANGSMITH_", "LANGCHAIN_", "OTEL_")


def _langgraph_cli() -> list[str]:
    """The ``langgraph`` command of this interpreter's environment."""
    found = Path(sys.executable).with_name("langgraph")
    if found.exists():
        return [str(found)]
    which = shutil.which("langgraph")
    if which is None:
        pytest.fail("langgraph-cli[inmem] is not installed: pip install -e '.[test]'")
    return [which]


def _server_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(_DROPPED)}
    env.update(
        MULTIAGENT_HOME=str(home),
        MULTIAGENT_PROVIDER="sim",
        MULTIAGENT_SIM__TTFT_S="0",
        MULTIAGENT_SIM__TOKEN_LATENCY_S="0",
        # nothing leaves the machine: no CLI analytics, no LangSmith runs
        LANGGRAPH_CLI_NO_ANALYTICS="1",
        LANGSMITH_TRACING="false",
        LANGCHAIN_TRACING_V2="false",
        # this checkout's package wins over any installed copy, in the server's workers too
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    )
    return env


def _config_in(base: Path) -> Path:
    """The project's ``langgraph.json`` with its paths made absolute, written under ``base``.

    ``langgraph dev`` resolves graph paths against its working directory and keeps its state
    (``.langgraph_api``) there: running it in ``base`` leaves the checkout untouched.
    """
    config = json.loads((ROOT / "langgraph.json").read_text(encoding="utf-8"))

    def absolute(path: str) -> str:
        return str((ROOT / path).resolve()) if path.startswith(".") else path

    def absolute_target(target: str) -> str:
        path, _, name = target.partition(":")
        return f"{absolute(path)}:{name}"

    config["dependencies"] = [absolute(d) for d in config["dependencies"]]
    config["graphs"] = {name: absolute_target(t) for name, t in config["graphs"].items()}
    if "auth" in config:
        config["auth"]["path"] = absolute_target(config["auth"]["path"])
    if "http" in config:
        config["http"]["app"] = absolute_target(config["http"]["app"])
    path = base / "langgraph.json"
    path.write_text(json.dumps(config), encoding="utf-8")
    return path


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Stop the server's whole process group: TERM, then KILL if it lingers."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=20)


@pytest.fixture(scope="module")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Start ``langgraph dev`` on a free loopback port; yield its URL; stop it after."""
    with running_langgraph_dev(tmp_path_factory) as url:
        yield url


@contextlib.contextmanager
def running_langgraph_dev(tmp_path_factory: pytest.TempPathFactory, **env: str) -> Iterator[str]:
    """``langgraph dev`` on a free loopback port, with ``env`` added to its environment."""
    with langgraph_dev(tmp_path_factory, **env) as server:
        yield server.url


@dataclass(frozen=True)
class DevServer:
    """A running ``langgraph dev``: its URL, its process (the leader of its process group) and
    the file its output goes to."""

    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def terminate(self) -> int:
        """SIGTERM the server's process group, as a deployment stops it; its exit code."""
        _stop(self.process)
        return int(self.process.returncode)


@contextlib.contextmanager
def langgraph_dev(tmp_path_factory: pytest.TempPathFactory, **env: str) -> Iterator[DevServer]:
    """``langgraph dev`` on a free loopback port, with ``env`` added to its environment; the
    test may stop it itself (:meth:`DevServer.terminate`), else it is stopped after."""
    base = tmp_path_factory.mktemp("langgraph-dev")
    port = free_port()
    log_path = base / "server.log"
    command = [
        *_langgraph_cli(), "dev", "--config", str(_config_in(base)),
        "--host", "127.0.0.1", "--port", str(port), "--no-browser", "--no-reload",
    ]  # fmt: skip
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command,
            cwd=base,  # where `langgraph dev` keeps its state (.langgraph_api), not the checkout
            env={**_server_env(base / "home"), **env},
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so every worker is stopped too
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if process.poll() is not None:
                pytest.fail(f"langgraph dev exited ({process.returncode}):\n{log_path.read_text()}")
            try:
                if httpx.get(f"{url}/ok", timeout=2.0).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"langgraph dev did not answer in time:\n{log_path.read_text()}")
            time.sleep(0.25)
        yield DevServer(url=url, process=process, log=log_path)
    finally:
        _stop(process)
