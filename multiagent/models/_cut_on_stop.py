"""The second Ctrl-C, or a run given up, cuts the HTTP exchanges of the ``openai`` provider's
models.

Stopping now (see :mod:`multiagent._interrupt`) is a flag each stream checks between its
chunks. A stream waiting for its first chunk, from a server whose time to the first token is
long (a loaded llama.cpp server: minutes), checks nothing: its worker thread sits in a socket
``recv`` inside httpcore2, and LangGraph waits for that thread before the command can end, so
a run went on until the server answered. Nothing reaches a thread blocked in a system call but
the socket itself: ``shutdown(SHUT_RDWR)`` wakes its ``recv`` at once (closing the descriptor
from another thread does not reliably), and it is a plain system call, fit for the signal
handler (no lock, no wait).

What to shut is known only to httpcore2: httpx2 shows a response's socket (the
``network_stream`` extension) only once its headers have come, which a server may hold back
too, and neither library has a hook that sees a connection being opened or read, nor a way to
abort a request in flight. A connection pool reads and writes through its network backend, so
each pool of a client built here reads through :class:`_CuttableBackend`: its streams register
their socket while a read or write is under way, and the handler shuts those down. A read that
comes back once stopping now was asked raises :class:`~multiagent._interrupt.StopRequested`,
as a stream stopped between its chunks does: the pipeline records the call as cancelled, and
it is not retried as the connection error it would otherwise read as. httpx2 gives no public
way to choose a client's network backend, hence the pools' attribute, set before any
connection is opened (as :mod:`multiagent.models._gated_http` sets its transports).

The whole answers a :class:`~multiagent.models._openai_direct.DirectLine` exchanges over urllib3
are cut the same way: its pool's connections register their socket while they wait for the
answer and read it (``getresponse``, which reads the whole body of a preloaded answer), through
the pool's documented ``ConnectionCls``.

A run given up by its caller (a cancelled ``astream``, a closed ``stream``; see
:mod:`multiagent._interrupt`) cuts the exchanges of that run alone: each registered socket
carries the ``RunControl`` of the run its thread works for, and a read that comes back once
the run is given up raises :class:`~multiagent._interrupt.RunCancelled`. Other runs' calls go
on.

Only synchronous clients are cut: an asyncio run stops by its task's cancellation, which
reaches an awaited read. A brought model (``--model`` given a chat model object) keeps the
clients its owner built, which are not cut: its stream stops at its first chunk, and a call
waiting for one ends when the server answers.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
from collections.abc import Iterable
from typing import Any

import httpcore2
import httpx2
import urllib3
from urllib3.connection import HTTPConnection, HTTPSConnection

from multiagent._interrupt import at_run_given_up, at_stop_now, check_stop_now, current_control

#: The sockets of the exchanges under way, by the stream reading them, each with the
#: ``RunControl`` of the run it is read for (``None`` outside a run).
_open: dict[int, tuple[socket.socket, Any]] = {}


def _cut(sock: socket.socket) -> None:
    # the plain socket's shutdown: an SSL socket's own would drop its SSL object, which the
    # blocked read is using; a socket closed meanwhile has nothing to cut
    with contextlib.suppress(OSError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


def _cut_all() -> None:
    """Shut down every socket being read or written (called in the signal handler)."""
    for sock, _control in list(_open.values()):  # a copy: other threads add and remove
        _cut(sock)


def _cut_run(control: Any) -> None:
    """Shut down the sockets read or written for the run of ``control``, given up."""
    for sock, owner in list(_open.values()):
        if owner is control:
            _cut(sock)


at_stop_now(_cut_all)
at_run_given_up(_cut_run)


class _CuttableStream(httpcore2.NetworkStream):
    """A network stream whose socket the second Ctrl-C (or its run's end) shuts while it is
    read or written."""

    def __init__(self, inner: httpcore2.NetworkStream) -> None:
        self._inner = inner
        self._sock: socket.socket | None = inner.get_extra_info("socket")

    def _exchange(self) -> _Registered:
        return _Registered(id(self), self._sock)

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        with self._exchange():
            return self._inner.read(max_bytes, timeout)

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        with self._exchange():
            self._inner.write(buffer, timeout)

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore2.NetworkStream:
        return _CuttableStream(self._inner.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _Registered:
    """Holds a socket in the registry for one read or write; raises
    :class:`~multiagent._interrupt.StopRequested` for one stopping now cut, and
    :class:`~multiagent._interrupt.RunCancelled` for one its run's end cut (or would have:
    asked just before it began)."""

    def __init__(self, key: int, sock: socket.socket | None) -> None:
        self._key = key
        self._sock = sock

    def __enter__(self) -> None:
        if isinstance(self._sock, socket.socket):  # not a TLS-in-TLS proxy's transport
            _open[self._key] = (self._sock, current_control())
        # asked before the socket was registered: the cut did not see it
        check_stop_now()

    def __exit__(self, *exc_info: object) -> None:
        _open.pop(self._key, None)
        check_stop_now()  # the cut read's EOF or error is no failure of the server


class _CuttableBackend(httpcore2.NetworkBackend):
    """A network backend whose streams are :class:`_CuttableStream`."""

    def __init__(self, inner: httpcore2.NetworkBackend) -> None:
        self._inner = inner

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore2.NetworkStream:
        return _CuttableStream(
            self._inner.connect_tcp(host, port, timeout, local_address, socket_options)
        )

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore2.NetworkStream:
        return _CuttableStream(self._inner.connect_unix_socket(path, timeout, socket_options))

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


def cut_on_stop_now(client: httpx2.Client) -> httpx2.Client:
    """``client`` (not yet used), its exchanges cut by the second Ctrl-C: every pool it
    routes through (its default transport's and each proxy's) reads through a
    :class:`_CuttableBackend`."""
    for transport in (client._transport, *client._mounts.values()):
        pool = getattr(transport, "_pool", None)
        backend = getattr(pool, "_network_backend", None)
        if backend is not None and not isinstance(backend, _CuttableBackend):
            pool._network_backend = _CuttableBackend(backend)  # type: ignore[union-attr]
    return client


class _CuttableHTTPConnection(HTTPConnection):
    """A urllib3 connection whose socket the second Ctrl-C shuts while it waits for and reads
    an answer."""

    def getresponse(self) -> urllib3.HTTPResponse:  # type: ignore[override]  # as urllib3's
        with _Registered(id(self), self.sock):
            return super().getresponse()


class _CuttableHTTPSConnection(HTTPSConnection):
    """The TLS twin of :class:`_CuttableHTTPConnection`."""

    def getresponse(self) -> urllib3.HTTPResponse:  # type: ignore[override]  # as urllib3's
        with _Registered(id(self), self.sock):
            return super().getresponse()


def cut_pool_on_stop_now(pool: urllib3.HTTPConnectionPool) -> None:
    """Make the connections ``pool`` opens from now on cut by the second Ctrl-C."""
    if isinstance(pool, urllib3.HTTPSConnectionPool):
        pool.ConnectionCls = _CuttableHTTPSConnection
    else:
        pool.ConnectionCls = _CuttableHTTPConnection


def cuttable_http_clients() -> tuple[httpx2.Client, httpx2.AsyncClient]:
    """The OpenAI SDK's own sync and async clients (its timeouts, connection limits,
    redirects and the environment's proxies), the sync one cut by the second Ctrl-C."""
    from openai import DefaultAsyncHttpxClient, DefaultHttpxClient

    return cut_on_stop_now(DefaultHttpxClient()), DefaultAsyncHttpxClient()


__all__ = ["cut_on_stop_now", "cut_pool_on_stop_now", "cuttable_http_clients"]
