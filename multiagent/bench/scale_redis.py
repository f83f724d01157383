"""Redis for the scale benchmarks: the configured server, or a throw-away one on loopback.

``bench scale --processes`` and ``--redis-overhead`` need a Redis server. Given a URL (the
``--redis-url`` option or ``MULTIAGENT_REDIS_URL``) they use it, each run under keys of its own;
else a ``redis-server`` (Debian's package) is started on a free loopback port with no
persistence, in a temporary directory, and stopped afterwards.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from multiagent.bench.simproc import stop_process
from multiagent.distributed.redis import redis_client
from multiagent.errors import MultiagentError, UsageError

_START_TIMEOUT_S = 15.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def bench_redis(url: str | None) -> Iterator[str]:
    """A reachable Redis URL: ``url`` when given (checked), else a server started here.

    Raises:
        UsageError: ``url`` does not answer, or none is given and no ``redis-server`` is
            installed.
        MultiagentError: The started server did not answer in time.
    """
    if url:
        with redis_client(url):
            pass
        yield url
        return
    binary = shutil.which("redis-server")
    if binary is None:
        raise UsageError(
            "bench scale needs Redis: give --redis-url or MULTIAGENT_REDIS_URL, "
            "or install redis-server so one is started on loopback"
        )
    port = _free_port()
    with tempfile.TemporaryDirectory(prefix="multiagent-bench-redis-") as folder:
        command = [
            binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly",
            "no", "--dir", folder, "--logfile", str(Path(folder) / "redis.log"),
        ]  # fmt: skip
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        started = f"redis://127.0.0.1:{port}/0"
        try:
            _wait_ready(started, process)
            yield started
        finally:
            stop_process(process)


def _wait_ready(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + _START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise MultiagentError(f"redis-server exited with code {process.returncode}")
        try:
            with redis_client(url):
                return
        except UsageError:
            time.sleep(0.05)
    raise MultiagentError(f"redis-server at {url} did not answer within {_START_TIMEOUT_S:g} s")
