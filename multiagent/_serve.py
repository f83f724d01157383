"""Serve an ASGI app with uvicorn in a background thread on a socket bound here.

Both servers of the project (the simulator and the metrics server) run this way. The listening
socket is bound before uvicorn starts, so a taken port is one clear
:class:`~multiagent.errors.UsageError` instead of a log line, and port 0 picks a free port whose
number is known before the server runs. :func:`wait_until_stopped` is the foreground loop of
``multiagent sim serve`` and ``multiagent metrics serve``.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import signal
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from multiagent._interrupt import from_signal_handler
from multiagent.errors import MultiagentError, UsageError

_START_TIMEOUT_S = 10.0


def bind_socket(host: str, port: int, *, what: str) -> socket.socket:
    """Bind a listening TCP socket; a bad host or a taken port is a one-line usage error."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise UsageError(f"{what} cannot listen on {host}:{port}: {exc}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        reason = exc.strerror or str(exc)
        raise UsageError(f"{what} cannot listen on {host}:{port}: {reason}") from None
    return sock


class _NoCancelledRequests(logging.Filter):
    """Drop uvicorn's traceback of a request it cancelled itself: one still running when the
    server stops (Ctrl-C) past its graceful shutdown (uvicorn says so in a line of its own)."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        return not isinstance(error, asyncio.CancelledError)


def _log_config() -> dict[str, Any]:
    """uvicorn's logging, without the tracebacks of requests cancelled as the server stops."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["filters"] = {"no_cancelled_requests": {"()": _NoCancelledRequests}}
    config["handlers"]["default"]["filters"] = ["no_cancelled_requests"]
    return config


@contextmanager
def serve_in_thread(
    app: Any, *, host: str, port: int, what: str, **uvicorn_options: Any
) -> Iterator[str]:
    """Serve ``app`` on ``host:port`` in a daemon thread for the duration of a ``with`` block.

    Args:
        app: An ASGI application.
        host: Interface to listen on.
        port: TCP port; 0 picks a free one.
        what: Names the server in error messages and the thread name.
        **uvicorn_options: More ``uvicorn.Config`` settings (e.g. ``timeout_keep_alive``).

    Yields:
        The server's base URL, e.g. ``"http://127.0.0.1:50123"``.

    Raises:
        UsageError: The host cannot be resolved or the port is taken.
        MultiagentError: The server did not start.
    """
    import uvicorn  # only a serving command pays for it (it pulls in click, watchfiles, ...)

    sock = bind_socket(host, port, what=what)
    bound = int(sock.getsockname()[1])
    config = uvicorn.Config(
        app,
        host=host,
        port=bound,
        log_level="warning",
        log_config=_log_config(),
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=2,
        **uvicorn_options,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(
        target=server.run,
        kwargs={"sockets": [sock]},
        name=f"multiagent-{what.replace(' ', '-')}",
        daemon=True,
    )
    thread.start()
    deadline = time.monotonic() + _START_TIMEOUT_S
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            thread.join(timeout=_START_TIMEOUT_S)
            sock.close()
            raise MultiagentError(f"{what} could not start on {host}:{bound}")
        time.sleep(0.005)
    try:
        shown = f"[{host}]" if ":" in host else host
        yield f"http://{shown}:{bound}"
    finally:
        server.should_exit = True
        thread.join(timeout=_START_TIMEOUT_S)
        sock.close()


def wait_until_stopped() -> None:
    """Block until SIGTERM or Ctrl-C: the foreground life of a server started in a thread."""
    stop = threading.Event()
    # set off the main thread: the handler may interrupt its wait, the event's lock held
    previous = signal.signal(signal.SIGTERM, lambda *_: from_signal_handler(stop.set))
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
