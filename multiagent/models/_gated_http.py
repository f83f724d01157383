"""An HTTP transport holding a process's in-flight bound around each exchange.

See :mod:`multiagent.models._in_flight` for why the bound sits here. httpx2 (the OpenAI SDK's
HTTP client) bounds requests only by its pool's connections, and a pool limit blocks without
saying how long it waited (which the controller needs, to judge the round trip from the real
send): hence this small transport. Imported only by a pipeline that has a bound (a worker).
"""

from __future__ import annotations

import weakref
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx2

from multiagent.models._cut_on_stop import cuttable_http_clients
from multiagent.models._in_flight import InFlightGate


class _Once:
    """Gives a gate's place back once, however many ways the response ends."""

    def __init__(self, gate: InFlightGate) -> None:
        self._gate: InFlightGate | None = gate

    def __call__(self) -> None:
        gate, self._gate = self._gate, None
        if gate is not None:
            gate.release()


class _ReleasingStream(httpx2.SyncByteStream):
    def __init__(self, inner: httpx2.SyncByteStream, release: Callable[[], None]) -> None:
        self._inner = inner
        self._release = release

    def __iter__(self) -> Iterator[bytes]:
        yield from self._inner

    def close(self) -> None:
        try:
            self._inner.close()
        finally:
            self._release()


class _AsyncReleasingStream(httpx2.AsyncByteStream):
    def __init__(self, inner: httpx2.AsyncByteStream, release: Callable[[], None]) -> None:
        self._inner = inner
        self._release = release

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for part in self._inner:
            yield part

    async def aclose(self) -> None:
        try:
            await self._inner.aclose()
        finally:
            self._release()


def _gated_response(response: httpx2.Response, stream: Any, release: _Once) -> httpx2.Response:
    gated = httpx2.Response(
        status_code=response.status_code,
        headers=response.headers,
        stream=stream,
        extensions=response.extensions,
    )
    # a response dropped unread (a client that never closes it) still gives its place back
    weakref.finalize(gated, release)
    return gated


class GatedTransport(httpx2.BaseTransport):
    """An httpx transport whose requests hold a place of ``gate`` from the moment they are
    written until their response is closed (read to its end, or a stream closed early)."""

    def __init__(self, inner: httpx2.BaseTransport, gate: InFlightGate) -> None:
        self._inner = inner
        self._gate = gate

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        self._gate.acquire()
        release = _Once(self._gate)
        try:
            response = self._inner.handle_request(request)
        except BaseException:
            release()
            raise
        stream = response.stream
        assert isinstance(stream, httpx2.SyncByteStream)  # a sync transport's response
        return _gated_response(response, _ReleasingStream(stream, release), release)

    def close(self) -> None:
        self._inner.close()


class AsyncGatedTransport(httpx2.AsyncBaseTransport):
    """The asyncio twin of :class:`GatedTransport`."""

    def __init__(self, inner: httpx2.AsyncBaseTransport, gate: InFlightGate) -> None:
        self._inner = inner
        self._gate = gate

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        await self._gate.aacquire()
        release = _Once(self._gate)
        try:
            response = await self._inner.handle_async_request(request)
        except BaseException:
            release()
            raise
        stream = response.stream
        assert isinstance(stream, httpx2.AsyncByteStream)  # an async transport's response
        return _gated_response(response, _AsyncReleasingStream(stream, release), release)

    async def aclose(self) -> None:
        await self._inner.aclose()


def gated_http_clients(gate: InFlightGate) -> tuple[httpx2.Client, httpx2.AsyncClient]:
    """The OpenAI SDK's own sync and async clients (its timeouts, connection limits,
    redirects, and the proxies the environment names), whose requests pass ``gate``.

    A client given a transport ignores the environment's proxies, so the clients are built as
    the SDK builds them and every transport they route through (the default one and each
    proxy's) is wrapped afterwards: httpx2 has no public hook for it, hence its attributes.
    """
    sync, async_ = cuttable_http_clients()  # the SDK's, cut by a second Ctrl-C
    sync._transport = GatedTransport(sync._transport, gate)
    sync._mounts = {
        pattern: None if transport is None else GatedTransport(transport, gate)
        for pattern, transport in sync._mounts.items()
    }
    async_._transport = AsyncGatedTransport(async_._transport, gate)
    async_._mounts = {
        pattern: None if transport is None else AsyncGatedTransport(transport, gate)
        for pattern, transport in async_._mounts.items()
    }
    return sync, async_
