"""Run the simulator: in a background thread (tests, benchmarks) or in the foreground (CLI)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from multiagent._serve import serve_in_thread
from multiagent.sim.app import create_sim_app
from multiagent.sim.config import SimServerConfig


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
    app = create_sim_app(config or SimServerConfig())
    # many short requests from a few clients: keep connections open between them
    with serve_in_thread(
        app, host=host, port=port, what="the simulator", timeout_keep_alive=30
    ) as url:
        yield f"{url}/v1"
