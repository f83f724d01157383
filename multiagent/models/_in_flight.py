"""A process's bound on its requests at the provider.

A queue worker promises ``--concurrency`` calls in flight. It runs more threads than that, so a
call's own CPU (graph step, payload, parsing) overlaps the open calls instead of adding to each
call's cycle. Where the pipeline builds the provider's HTTP client (the ``openai`` provider),
the bound is held around the HTTP exchange only (:mod:`multiagent.models._gated_http` for the
SDK's requests, :class:`~multiagent.models._openai_direct.DirectLine` for a whole answer sent
directly): a place is taken when the request is written and given back when its response is
read to the end, so everything else a call does (the limiter's round trips, building the
payload, parsing the answer) overlaps the open calls. Measured on one worker at 5 calls in
flight against a 50 ms server: 85% of the ideal rate with the bound around the whole call, 92%
around the exchange.
The time a request waits for a place is taken off its send time (:func:`held_at_gate`), so the
round trips the controller judges overload by hold no wait of ours (a bound kept by the HTTP
pool alone was seen to stretch them and cut the shared limit). For a model without our HTTP
client (the in-process simulated model, a brought model), :class:`GatedController` takes the
bound before the controller's slot instead.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import Any

from multiagent.models._bp_wait import Passage

#: Seconds the running call's requests waited at a transport gate (a list: added to in place).
_WAITED: contextvars.ContextVar[list[float] | None] = contextvars.ContextVar(
    "multiagent_gate_waited", default=None
)


#: How often a thread waiting for a place for an asyncio waiter checks that it is still wanted.
_POLL_S = 0.1


class InFlightGate:
    """At most ``limit`` holders at once, for threads and for asyncio tasks alike."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"an in-flight bound must be at least 1, got {limit}")
        self.limit = limit
        self._free = threading.BoundedSemaphore(limit)

    def acquire(self) -> None:
        """Wait for a place (blocking); the wait counts toward the running call's send time
        (see :func:`held_at_gate`)."""
        began = time.perf_counter()
        self._free.acquire()
        _note_wait(began)

    async def aacquire(self) -> None:
        """Wait for a place without blocking the event loop; a cancelled wait holds none. The
        wait counts as :meth:`acquire`'s does."""
        if self._free.acquire(blocking=False):
            return
        began = time.perf_counter()
        claim = _Claim(self._free)
        try:
            await asyncio.to_thread(claim.wait)
        except BaseException:
            claim.abandon()  # cancelled: a place the thread took, or takes later, goes back
            raise
        _note_wait(began)

    def release(self) -> None:
        """Give a place back."""
        self._free.release()


class _Claim:
    """One asyncio waiter's claim on a place, waited for on a worker thread.

    The thread outlives a cancelled waiter, and the waiter's event loop may be closed by the
    time a place comes free, so whether the place is kept or given back is settled between the
    two under a lock, never by a callback on the loop; an abandoned claim's thread stops
    waiting within :data:`_POLL_S`, so no thread is left blocked for a place nobody wants.
    """

    def __init__(self, free: threading.BoundedSemaphore) -> None:
        self._free = free
        self._lock = threading.Lock()
        self._abandoned = False
        self._taken = False

    def wait(self) -> None:
        """Take a place for the waiter (on the worker thread), unless it gave up."""
        while not self._free.acquire(timeout=_POLL_S):
            if self._abandoned:
                return
        with self._lock:
            if self._abandoned:
                self._free.release()
                return
            self._taken = True

    def abandon(self) -> None:
        """The waiter gave up: a place taken for it goes back, and none is taken later."""
        with self._lock:
            self._abandoned = True
            if self._taken:
                self._taken = False
                self._free.release()


class GatedPassage:
    """A controller's passage entered only once the gate has a place; both left together."""

    def __init__(self, gate: InFlightGate, passage: Passage) -> None:
        self._gate = gate
        self._passage = passage

    def __enter__(self) -> Passage:
        self._gate.acquire()
        try:
            return self._passage.__enter__()
        except BaseException:
            self._gate.release()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            self._passage.__exit__(exc_type, exc, tb)
        finally:
            self._gate.release()

    async def __aenter__(self) -> Passage:
        await self._gate.aacquire()
        try:
            return await self._passage.__aenter__()
        except BaseException:
            self._gate.release()
            raise

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            await self._passage.__aexit__(exc_type, exc, tb)
        finally:
            self._gate.release()


class GatedController:
    """A backpressure controller whose slots first pass ``gate``; everything else is the
    controller's own (its state, metrics and registry entry are untouched)."""

    def __init__(self, controller: Any, gate: InFlightGate) -> None:
        self.controller = controller
        self.gate = gate

    def slot(self, *, tokens: int = 0) -> GatedPassage:
        """The controller's :meth:`slot`, entered once the gate has a place."""
        return GatedPassage(self.gate, self.controller.slot(tokens=tokens))

    def aslot(self, *, tokens: int = 0) -> GatedPassage:
        """The async twin of :meth:`slot`."""
        return GatedPassage(self.gate, self.controller.aslot(tokens=tokens))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.controller, name)


@contextmanager
def held_at_gate(passage: Passage) -> Iterator[None]:
    """Within the block, time a request waits at an :class:`InFlightGate` (in
    :class:`~multiagent.models._gated_http.GatedTransport`) moves ``passage``'s send time
    later, so the controller judges the round trip from the request's real send."""
    waited: list[float] = [0.0]
    token = _WAITED.set(waited)
    try:
        yield
    finally:
        _WAITED.reset(token)
        passage.sent_later(waited[0])


def _note_wait(began: float) -> None:
    """Count the time since ``began`` (``time.perf_counter``) as the running call's wait at a
    gate, when a :func:`held_at_gate` block is open (none is around a whole-call gate)."""
    waited = _WAITED.get()
    if waited is not None:
        waited[0] += time.perf_counter() - began
