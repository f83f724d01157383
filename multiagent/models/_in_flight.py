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

A place may be long in coming, and a worker frozen (SIGSTOP) while its request waited for one
may find, once resumed, that another worker took its queue entry over: the ownership question
asked when the call reserved its budget (:mod:`multiagent.distributed.entry_guard`) was asked
before the wait. So a request asks again once it has its place, before it is sent: the pipeline
names the question around a call's attempts (:func:`asked_before_send`), and a gate that finds
it refused gives the place back and raises what the question raised (the call is then recorded
as cancelled, nothing sent). The guard's question costs a round trip only after a freeze.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import Any, Protocol, runtime_checkable

from multiagent.models._bp_wait import Passage

#: Seconds the running call's requests waited at a transport gate (a list: added to in place).
_WAITED: contextvars.ContextVar[list[float] | None] = contextvars.ContextVar(
    "multiagent_gate_waited", default=None
)

#: What a request asks once it has a place at a gate, before it is sent (see the module).
_BEFORE_SEND: contextvars.ContextVar[Callable[[], None] | None] = contextvars.ContextVar(
    "multiagent_gate_before_send", default=None
)


@runtime_checkable
class SendGuard(Protocol):
    """A run's shared budget that is asked again before each request is sent, as well as when
    the call reserves (an :class:`~multiagent.distributed.entry_guard.EntryGuard`)."""

    def check(self) -> None:
        """Raise if the request may no longer be sent."""
        ...


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
        self._still_to_send()

    async def aacquire(self) -> None:
        """Wait for a place without blocking the event loop; a cancelled wait holds none. The
        wait counts as :meth:`acquire`'s does."""
        if not self._free.acquire(blocking=False):
            began = time.perf_counter()
            claim = _Claim(self._free)
            try:
                await asyncio.to_thread(claim.wait)
            except BaseException:
                claim.abandon()  # cancelled: a place the thread took, or takes later, goes back
                raise
            _note_wait(began)
        self._still_to_send()

    def _still_to_send(self) -> None:
        """Ask the running call's question (see :func:`asked_before_send`) with the place held;
        a refusal gives the place back."""
        check = _BEFORE_SEND.get()
        if check is None:
            return
        try:
            check()
        except BaseException:
            self._free.release()
            raise

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
def asked_before_send(budget: object) -> Iterator[None]:
    """Within the block, a request that gets its place at an :class:`InFlightGate` asks
    ``budget`` first whether it may still be sent, when ``budget`` is a :class:`SendGuard`
    (a run's shared budget; nothing is asked for any other, or none). Around a call's attempts,
    where nothing is yielded: the question is the call's, not its consumer's."""
    # None first: a runtime-checkable Protocol's isinstance costs ~7 µs, on every call
    if budget is None or not isinstance(budget, SendGuard):
        yield
        return
    token = _BEFORE_SEND.set(budget.check)
    try:
        yield
    finally:
        _BEFORE_SEND.reset(token)


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
