"""Waiting for the controller: blocking threads and asyncio tasks, woken when a slot frees or
every booked slot is void."""

from __future__ import annotations

import asyncio
import math
import threading
from abc import abstractmethod

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


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
