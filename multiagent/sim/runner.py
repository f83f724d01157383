"""Run the simulator: in a background thread (tests, benchmarks) or in the foreground (CLI)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn

from multiagent.errors import MultiagentError, UsageError
from multiagent.sim.app import create_sim_app
from multiagent.sim.config import SimServerConfig

_START_TIMEOUT_S = 10.0


def _server(config: SimServerConfig, *, host: str, port: int) -> uvicorn.Server:
    app = create_sim_app(config)
    uv_config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=2,
        # many short requests from a few clients: keep connections open between them
        timeout_keep_alive=30,
    )
    return uvicorn.Server(uv_config)


def _listen(host: str, port: int) -> socket.socket:
    """Bind the listening socket here, so a taken port is one clear error, not a log."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise UsageError(f"the simulator cannot listen on {host}:{port}: {exc}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        reason = exc.strerror or str(exc)
        raise UsageError(f"the simulator cannot listen on {host}:{port}: {reason}") from None
    return sock


@contextmanager
def run_sim_server(
    config: SimServerConfig | None = None, *, host: str = "127.0.0.1", port: int = 0
) -> Iterator[str]:
    """Serve the simulator in a background thread for the duration of a ``with`` block.

    Args:
        config: What to simulate; the defaults when ``None``.
        host: Interface to listen on (loopback by default).
        port: TCP port; 0 picks a free one.

    Yields:
        The OpenAI base URL, e.g. ``"http://127.0.0.1:50123/v1"``; statistics are at
        ``<base URL without /v1>/sim/stats``.

    Raises:
        UsageError: The host cannot be resolved or the port is taken.
        MultiagentError: The server did not start.
    """
    sock = _listen(host, port)
    bound = int(sock.getsockname()[1])
    server = _server(config or SimServerConfig(), host=host, port=bound)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="multiagent-sim", daemon=True
    )
    thread.start()
    deadline = time.monotonic() + _START_TIMEOUT_S
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            thread.join(timeout=_START_TIMEOUT_S)
            sock.close()
            raise MultiagentError(f"the simulator could not start on {host}:{bound}")
        time.sleep(0.005)
    try:
        shown = f"[{host}]" if ":" in host else host
        yield f"http://{shown}:{bound}/v1"
    finally:
        server.should_exit = True
        thread.join(timeout=_START_TIMEOUT_S)
        sock.close()
