"""The simulator as a separate process for benchmarks: its CPU is not the client's.

``multiagent sim serve --port 0`` is started with a schedule file; the base URL is read from its
first line of output. Statistics and resets go over HTTP (``/sim/stats``, ``/sim/reset``).
The child gets a data directory of its own: a benchmark is not audited, and the simulators it
starts leave nothing in the user's ``MULTIAGENT_HOME``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from multiagent.errors import MultiagentError
from multiagent.sim.config import Phase

_START_TIMEOUT_S = 30.0


@contextmanager
def sim_process(phases: Sequence[Phase], *, server_flags: Sequence[str] = ()) -> Iterator[str]:
    """Run ``multiagent sim serve`` on a free loopback port with ``phases`` as its schedule.

    Args:
        phases: The capacity schedule.
        server_flags: More ``sim serve`` flags (base limits and latency).

    Yields:
        The OpenAI base URL (``http://127.0.0.1:PORT/v1``).

    Raises:
        MultiagentError: The simulator did not start.
    """
    with tempfile.TemporaryDirectory(prefix="multiagent-bench-sim-") as tmp:
        schedule = Path(tmp) / "schedule.json"
        schedule.write_text(
            json.dumps({"phases": [p.model_dump(exclude_none=True) for p in phases]}),
            encoding="utf-8",
        )
        command = [
            sys.executable, "-m", "multiagent", "sim", "serve",
            "--host", "127.0.0.1", "--port", "0", "--schedule", str(schedule), *server_flags,
        ]  # fmt: skip
        env = {**os.environ, "MULTIAGENT_HOME": str(Path(tmp) / "home")}
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
        )
        try:
            url = _read_url(process)
            _wait_healthy(url)
            yield url
        finally:
            stop_process(process)
            for stream in (process.stdout, process.stderr):
                if stream is not None:
                    stream.close()


def stop_process(process: subprocess.Popen[Any]) -> None:
    """Ask a child process to end, and kill it when it has not within 10 s."""
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


def _read_url(process: subprocess.Popen[str]) -> str:
    assert process.stdout is not None
    line = process.stdout.readline()
    marker = "listening on "
    if marker not in line:
        error = process.stderr.read() if process.stderr and process.poll() is not None else ""
        raise MultiagentError(f"the simulator did not start: {(line + error).strip()!r}")
    return line.split(marker, 1)[1].strip()


def _wait_healthy(url: str) -> None:
    deadline = time.monotonic() + _START_TIMEOUT_S
    while True:
        try:
            sim_call("GET", url, "/healthz")
            return
        except OSError:
            if time.monotonic() > deadline:
                raise MultiagentError(f"the simulator at {url} never became healthy") from None
            time.sleep(0.05)


def sim_call(method: str, url: str, path: str) -> Any:
    """Call a simulator route (``/sim/stats``, ``/sim/reset``, ``/healthz``) and parse its JSON."""
    root = url.removesuffix("/").removesuffix("/v1")
    request = urllib.request.Request(
        root + path, method=method, data=b"" if method == "POST" else None
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read().decode("utf-8"))
