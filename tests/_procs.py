"""Processes the tests start: a free loopback port for a server, stopping one however it is,
and a ``multiagent`` command parked at a crash point."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from multiagent._crash import CRASH_MARKER_ENV, CRASH_POINT_ENV

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def stop(process: subprocess.Popen[Any], *, timeout: float = 10.0) -> None:
    """Stop ``process``: TERM, then KILL if it is still there after ``timeout`` seconds."""
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def park_at(
    point: str,
    *args: str,
    tmp_path: Path,
    env: dict[str, str] | None = None,
    stdout: int = subprocess.DEVNULL,
) -> subprocess.Popen[bytes]:
    """Start ``multiagent ARGS`` and return once it is parked at crash point ``point`` (see
    :func:`multiagent._crash.crash_point`; with ``MULTIAGENT_CRASH_POINT_GO`` in ``env`` it goes
    on once that file exists)."""
    marker = tmp_path / f"reached-{point}"
    marker.unlink(missing_ok=True)
    child_env = {
        **os.environ,
        **(env or {}),
        CRASH_POINT_ENV: point,
        CRASH_MARKER_ENV: str(marker),
        "PYTHONPATH": os.pathsep.join([str(REPO), *sys.path]),
    }
    child = subprocess.Popen(
        [sys.executable, "-m", "multiagent", *args],
        env=child_env,
        stdout=stdout,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 180  # a guard against a hang, not a measurement
    while not marker.exists() and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    if not marker.exists():
        child.kill()
        _out, err = child.communicate()
        raise AssertionError(f"never reached {point}: {err.decode()[-800:]}")
    return child
