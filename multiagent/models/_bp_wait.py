"""Waiting for the controller: blocking threads and asyncio tasks, woken when a slot frees or
every booked slot is void; and :class:`Passage`, the context manager that gives a slot back.

A slot is acquired by entering a passage and given back by leaving it, whatever the way out:
the caller reports an answer (:meth:`Passage.answered`) or a failure (:meth:`Passage.failed`);
an exception escaping the block is recorded as the failure it is; anything else (a return
without a report, ``asyncio.CancelledError``, ``GeneratorExit``, ``KeyboardInterrupt``) cancels
the ticket, which frees the slot without telling the controller anything about the provider.
"""

from __future__ import annotations

import asyncio
import math
import threading
from abc import abstractmethod
from collections.abc import Mapping
from types import TracebackType

from multiagent._interrupt import check_stop
from multiagent.models._bp_types import BackpressureConfig, Ticket


class Waiting:
    """How callers wait on a controller's decisions (the controller supplies ``_poll``)."""

    config: BackpressureConfig
    _lock: threading.Lock
    _slot_freed: threading.Condition
    _rebooked: threading.Condition
    _slot_waiters: set[asyncio.Future[None]]
    _pace_waiters: set[asyncio.Future[None]]

    @abstractmethod
    def request(self, *, tokens: int = 0) -> Ticket:
        """Register a request."""

    @abstractmethod
    def cancel(self, ticket: Ticket) -> None:
        """Give up a ticket."""

    @abstractmethod
    def release(
        self,
        ticket: Ticket,
        *,
        error: BaseException | None = None,
        headers: Mapping[str, str] | None = None,
        output_tokens: int | None = None,
        served_s: float | None = None,
    ) -> None:
        """Record how a sent request ended."""

    @abstractmethod
    def _poll(self, ticket: Ticket) -> float:
        """Decide on ``ticket`` with the lock held: 0 to send, else seconds to wait."""

    def _notify(self, *, rebooked: bool) -> None:
        """Wake waiters (the lock is held): one slot was freed, or every booking is void."""
        self._slot_freed.notify_all()
        waiters = self._slot_waiters
        self._slot_waiters = set()
        if rebooked:
            self._rebooked.notify_all()
            waiters |= self._pace_waiters
            self._pace_waiters = set()
        for future in waiters:
            future.get_loop().call_soon_threadsafe(_resolve, future)

    def acquire(self, *, tokens: int = 0) -> Ticket:
        """Block the calling thread until a request of ``tokens`` tokens may be sent."""
        ticket = self.request(tokens=tokens)
        try:
            with self._lock:
                while (wait := self._poll(ticket)) > 0:
                    check_stop()  # Ctrl-C, or the run given up (see multiagent._interrupt)
                    condition = self._slot_freed if math.isinf(wait) else self._rebooked
                    condition.wait(timeout=min(wait, self.config.tick_s))
        except BaseException:
            self.cancel(ticket)
            raise
        return ticket

    async def aacquire(self, *, tokens: int = 0) -> Ticket:
        """Wait (without blocking the event loop) until a request may be sent."""
        loop = asyncio.get_running_loop()
        ticket = self.request(tokens=tokens)
        try:
            while True:
                future: asyncio.Future[None] = loop.create_future()
                with self._lock:
                    wait = self._poll(ticket)
                    if wait <= 0:
                        return ticket
                    waiters = self._slot_waiters if math.isinf(wait) else self._pace_waiters
                    waiters.add(future)
                try:
                    await asyncio.wait_for(future, timeout=min(wait, self.config.tick_s))
                except TimeoutError:
                    with self._lock:
                        waiters.discard(future)
        except BaseException:
            self.cancel(ticket)
            raise

    def slot(self, *, tokens: int = 0) -> Passage:
        """A request's passage: ``with controller.slot(tokens=n) as passage:`` blocks until it
        may be sent, and leaving the block gives the slot back on every way out.

        Args:
            tokens: The request's estimated tokens (prompt plus output allowance).
        """
        return Passage(self, tokens=tokens)

    def aslot(self, *, tokens: int = 0) -> Passage:
        """The async twin of :meth:`slot`: ``async with controller.aslot(tokens=n) as passage:``."""
        return Passage(self, tokens=tokens)


class Passage:
    """One request's way through a controller: entered when it may be sent, left exactly once.

    Use ``with`` (blocking wait) or ``async with`` (asyncio wait); both leave through
    :meth:`_leave`, so the twins cannot drift apart.
    """

    def __init__(self, controller: Waiting, *, tokens: int) -> None:
        self._controller = controller
        self._tokens = tokens
        self._ticket: Ticket | None = None
        self._settled = False

    @property
    def ticket(self) -> Ticket:
        """The ticket that let the request go (only inside the block)."""
        if self._ticket is None:
            raise RuntimeError("the passage has not been entered")
        return self._ticket

    def answered(
        self,
        *,
        headers: Mapping[str, str] | None = None,
        output_tokens: int | None = None,
        served_s: float | None = None,
    ) -> None:
        """Report an answer (its response headers, its output tokens when known: the
        controller judges latency per output token, and the server's own time for it when the
        server said: see :func:`~multiagent.models._bp_health.served_seconds`); the slot is free
        from now on."""
        self._settle(error=None, headers=headers, output_tokens=output_tokens, served_s=served_s)

    def sent_later(self, seconds: float) -> None:
        """The request left ``seconds`` after its slot was granted (it waited at a gate of the
        process's own): its round trip is judged from the real send."""
        ticket = self._ticket
        if seconds > 0 and ticket is not None and ticket.sent_at is not None:
            ticket.sent_at += seconds

    def failed(self, error: BaseException) -> None:
        """Report that the provider call failed with ``error``; the slot is free from now on."""
        self._settle(error=error, headers=None)

    def _settle(
        self,
        *,
        error: BaseException | None,
        headers: Mapping[str, str] | None,
        output_tokens: int | None = None,
        served_s: float | None = None,
    ) -> None:
        """Release the ticket with its outcome, once (a second report is ignored)."""
        if self._settled or self._ticket is None:
            return
        self._settled = True
        self._controller.release(
            self._ticket,
            error=error,
            headers=headers,
            output_tokens=output_tokens,
            served_s=served_s,
        )

    def _leave(self, error: BaseException | None) -> None:
        """Give the slot back: an escaping exception is the call's failure; else cancel."""
        if self._settled or self._ticket is None:
            return
        if isinstance(error, Exception):
            self._settle(error=error, headers=None)
            return
        # cancelled, interrupted, closed early or left without a report: no verdict on the
        # provider, only the slot to give back
        self._settled = True
        self._controller.cancel(self._ticket)

    def __enter__(self) -> Passage:
        self._ticket = self._controller.acquire(tokens=self._tokens)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._leave(exc)

    async def __aenter__(self) -> Passage:
        self._ticket = await self._controller.aacquire(tokens=self._tokens)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._leave(exc)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
