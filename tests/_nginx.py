"""nginx on loopback as a rate-limiting reverse proxy: a real limiter nobody here wrote.

``limit_req`` (a leaky bucket, one key for every client) answers 429 to requests above its rate,
with no ``x-ratelimit-*`` headers and no ``Retry-After``: a provider the runtime must pace
blind. Its access log records the status of every request it answered.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from multiagent.sim import SimServerConfig, run_sim_server
from tests._procs import free_port, stop

_CONF = """
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 512; }}
http {{
    client_body_temp_path {dir}/tmp/body;
    proxy_temp_path {dir}/tmp/proxy;
    fastcgi_temp_path {dir}/tmp/fastcgi;
    uwsgi_temp_path {dir}/tmp/uwsgi;
    scgi_temp_path {dir}/tmp/scgi;
    log_format statuses '$status $request_method $uri $msec';
    access_log {dir}/access.log statuses;
    limit_req_zone $server_name zone=provider:1m rate={rate}r/s;
    limit_req_status 429;
    server {{
        listen 127.0.0.1:{port};
        server_name provider;
        location / {{
            limit_req zone=provider burst={burst} nodelay;
            proxy_pass {upstream};
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
        }}
    }}
}}
"""


def nginx_binary() -> str:
    """nginx's path; the test is skipped (with the reason) when it is not installed."""
    found = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx",) if Path(p).exists()), None
    )
    if found is None:
        pytest.skip("nginx is not installed (apt-get install nginx-light)")
    return found


@contextmanager
def rate_limiting_proxy(
    upstream: str, directory: Path, *, rate: int, burst: int
) -> Iterator[tuple[str, Path]]:
    """nginx in front of ``upstream`` (``http://host:port``), ``rate`` requests per second.

    Yields:
        Its base URL and its access log (one ``STATUS METHOD URI TIME`` line per request).
    """
    binary = nginx_binary()
    (directory / "tmp").mkdir(parents=True)
    (directory / "tmp").chmod(0o777)  # a master run as root hands requests to unprivileged workers
    port = free_port()
    conf = directory / "nginx.conf"
    conf.write_text(
        _CONF.format(dir=directory, rate=rate, burst=burst, port=port, upstream=upstream),
        encoding="utf-8",
    )
    command = [binary, "-p", str(directory), "-c", str(conf), "-g", "daemon off;"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                error = process.stderr.read().decode() if process.stderr else ""
                raise RuntimeError(f"nginx exited: {error[-500:]}")
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("nginx did not listen within 30 s")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}", directory / "access.log"
    finally:
        stop(process)


@contextmanager
def simulator_behind_nginx(directory: Path, *, rate: int) -> Iterator[tuple[str, Path]]:
    """The simulator behind nginx at ``rate`` requests per second (a burst of 2), as a blind
    provider's gateway: the simulator limits and advertises nothing, nginx is the only limit.

    Yields:
        The OpenAI base URL (``http://127.0.0.1:PORT/v1``) and nginx's access log.
    """
    sim = SimServerConfig(rpm=60_000, tpm=100_000_000, ttft_s=0.02, limit_headers=False)
    with (
        run_sim_server(sim) as sim_url,
        rate_limiting_proxy(sim_url.removesuffix("/v1"), directory, rate=rate, burst=2) as (
            proxy,
            log,
        ),
    ):
        yield f"{proxy}/v1", log


def chat_statuses(log: Path) -> Counter[str]:
    """How many chat completions nginx answered with each status, from its access log."""
    lines = log.read_text().splitlines()
    return Counter(line.split()[0] for line in lines if "/chat/completions" in line)
