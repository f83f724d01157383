"""The real-model suite: llama-cpp-python's server with the packaged SmolLM2 on loopback.

The server is started once for the session on a free port (context 4096 tokens,
``--interrupt_requests false`` as the README says), behind a recording proxy; it is stopped at
the end. Outputs are bounded per node so the suite stays
short on a 2-core machine (SmolLM2-135M writes some tens of tokens per second there).
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx2
import pytest

from tests._procs import free_port, stop
from tests.realmodel._recorder import Recording, recording_proxy

pytest.importorskip("llama_cpp", reason="the local extra is not installed")

#: Output bounds by node for the suite (the local provider's own are a little larger).
BOUNDS = {"default": 48, "plan": 160, "work": 48, "speak": 48, "moderate": 96,
          "summarize": 64, "synthesize": 64, "validate": 96}  # fmt: skip
_SERVER = Path(__file__).with_name("_llama_server.py")


@contextmanager
def running_llama_server(log_dir: Path, *options: str) -> Iterator[str]:
    """``http://127.0.0.1:PORT`` of a ``llama_cpp.server`` with the packaged model, ``options``
    added to its command line; stopped when the block ends."""
    with llama_server_process(log_dir, *options) as (url, _):
        yield url


@contextmanager
def llama_server_process(
    log_dir: Path, *options: str, port: int | None = None
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """:func:`running_llama_server`, on ``port`` when given, with its process (to kill)."""
    from multiagent.models.local_engine import packaged_model_path

    port = free_port() if port is None else port
    log = (log_dir / "server.log").open("ab")
    command = [sys.executable, str(_SERVER), "--model", str(packaged_model_path()),
               "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "4096", *options]  # fmt: skip
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"llama_cpp.server exited with {process.returncode}")
            try:
                if httpx2.get(f"{url}/v1/models", timeout=2).status_code == 200:
                    break
            except httpx2.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("llama_cpp.server did not answer /v1/models in 180 s")
            time.sleep(0.5)
        yield url, process
    finally:
        stop(process, timeout=20)
        log.close()


@pytest.fixture(scope="session")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The server as the README says to start it: a stream is never cut for the next request."""
    with running_llama_server(
        tmp_path_factory.mktemp("llama"), "--interrupt_requests", "false"
    ) as url:
        yield url


@pytest.fixture(scope="session")
def recorded_server(llama_server: str) -> Iterator[tuple[str, Recording]]:
    """The server behind a recording proxy: (base URL ending in ``/v1``, the recording)."""
    with recording_proxy(llama_server) as (url, recording):
        yield f"{url}/v1", recording


def bound_outputs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Short outputs per node, no completion cache (every call must reach the model)."""
    for node, tokens in BOUNDS.items():
        monkeypatch.setenv(f"MULTIAGENT_MODELS__MAX_OUTPUT_TOKENS__{node.upper()}", str(tokens))
    monkeypatch.setenv("MULTIAGENT_CACHE__COMPLETION_ENABLED", "false")
    monkeypatch.setenv("MULTIAGENT_CACHE__ANALYSIS_ENABLED", "false")


@pytest.fixture
def openai_real(
    recorded_server: tuple[str, Recording], monkeypatch: pytest.MonkeyPatch
) -> Recording:
    """The ``openai`` provider pointed at the real server; returns the cleared recording."""
    url, recording = recorded_server
    monkeypatch.setenv("MULTIAGENT_PROVIDER", "openai")
    monkeypatch.setenv("OPENAI_BASE_URL", url)
    monkeypatch.setenv("OPENAI_API_KEY", "dummy")
    bound_outputs(monkeypatch)
    recording.clear()
    return recording


@pytest.fixture
def local_provider(monkeypatch: pytest.MonkeyPatch) -> None:
    """The ``local`` provider in this process."""
    monkeypatch.setenv("MULTIAGENT_PROVIDER", "local")
    bound_outputs(monkeypatch)
