"""Whether a queue entry is still this worker's, asked where its work would pay or write next.

A worker frozen (SIGSTOP, a long pause) past the claim idle time finds, once resumed, that
another worker took its entry over (``XAUTOCLAIM``) and runs it. Whatever it was running, a
batch chunk or a queued run, must then stop at once: every further model call would be paid
twice, and a queued run's further checkpoints would fork the thread its new owner is writing
(a step finished by the calls that were in flight made a checkpoint newer than the new owner's
last one: the thread's head, a finished run, became an unfinished one).

One mechanism for both: :class:`EntryGuard` sits where every model call reserves its budget
(the ``shared`` budget of the run's ledger, see :mod:`multiagent.models.ledger`), so it is
asked before each call; a queued run's checkpointer is wrapped too (:func:`guarded_saver`), so
it is asked before each checkpoint and each task's writes. Once the entry is found another's
every call and every write is refused with :class:`TakenOver`, a stop like Ctrl-C's: the run
ends as ``interrupted``, and the worker leaves the entry to its owner (counted ``taken_over``).
The question costs a round trip only when nothing said so for half the claim idle time (the
heartbeat says so every third of it): after a freeze.

The call that was in flight when the worker froze was served, and paid: its worker keeps its
usage where the batch's or the run's spend is read (:mod:`.worker_chunks`).
"""

from __future__ import annotations

import contextlib
import copy
import threading
from collections.abc import Callable
from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver
from redis.exceptions import RedisError

from multiagent._interrupt import StopRequested
from multiagent.models.budget import ProjectBudget

__all__ = ["EntryGuard", "TakenOver", "guarded_saver"]


class TakenOver(StopRequested):
    """The entry is another worker's now: the call or the write is not made.

    A stop like Ctrl-C's (no ``Exception``, so no node records it as its failure): the run
    ends at once.
    """


class EntryGuard:
    """A ledger's ``shared`` budget (every call reserves there before it starts): it asks
    whether the entry is still this worker's first, then holds as ``inner`` (the batch's or the
    thread's budget in Redis, if any) does.

    Once the entry is found another's every call is refused (:class:`TakenOver`). Redis not
    answering the question counts as still this worker's: at worst the work runs twice, as it
    did before anyone asked.
    """

    def __init__(self, ours: Callable[[], bool], inner: ProjectBudget | None = None) -> None:
        self._ours = ours
        self._inner = inner
        self.taken_over = False

    def wrapping(self, inner: ProjectBudget | None) -> EntryGuard:
        """The same question in front of ``inner``: a queued run's thread budget."""
        return EntryGuard(self.still_ours, inner=inner)

    def still_ours(self) -> bool:
        """Whether the entry is still this worker's (``False`` for good once it was not)."""
        if not self.taken_over:
            with contextlib.suppress(RedisError):
                self.taken_over = not self._ours()
        return not self.taken_over

    def check(self) -> None:
        """Raise :class:`TakenOver` once the entry is another's."""
        if not self.still_ours():
            raise TakenOver

    def reserve(self, usd: float) -> str:
        """Refuse the call once the entry is another's; else hold ``usd`` in ``inner``."""
        self.check()
        return "" if self._inner is None else self._inner.reserve(usd)

    def settle(self, reservation: str, usd: float) -> None:
        """Settle in ``inner``."""
        if self._inner is not None:
            self._inner.settle(reservation, usd)

    def release(self, reservation: str) -> None:
        """Release in ``inner``."""
        if self._inner is not None:
            self._inner.release(reservation)

    def report(self) -> dict[str, Any]:
        """``inner``'s report (nothing without one)."""
        return {} if self._inner is None else self._inner.report()


def guarded_saver(saver: BaseCheckpointSaver[Any], guard: EntryGuard) -> BaseCheckpointSaver[Any]:
    """``saver`` (one run's, opened for it) writing checkpoints and task writes only while
    ``guard`` finds the entry this worker's; reads are ``saver``'s own.

    A subclass of the saver's own class over the same connection, not a proxy: what recognises
    a PostgreSQL saver by its class (the thread's recorded usage,
    :mod:`multiagent.persistence.run_usage`) still does.
    """
    guarded = copy.copy(saver)
    guarded.__class__ = _guarded_class(type(saver))
    guarded.__dict__["_entry_guard"] = guard
    return guarded


def _guarded_class(base: type[Any]) -> type[Any]:
    """``base`` whose ``put`` and ``put_writes`` ask the instance's guard first (one class per
    saver class, made once)."""
    with _classes_lock:
        if base not in _classes:
            _classes[base] = _make_guarded(base)
        return _classes[base]


_classes: dict[type[Any], type[Any]] = {}
_classes_lock = threading.Lock()


def _make_guarded(base: type[Any]) -> type[Any]:
    """A subclass of ``base`` whose ``put`` and ``put_writes`` ask the guard first."""

    def put(self: Any, *args: Any, **kwargs: Any) -> Any:
        self._entry_guard.check()
        return base.put(self, *args, **kwargs)

    def put_writes(self: Any, *args: Any, **kwargs: Any) -> None:
        self._entry_guard.check()
        base.put_writes(self, *args, **kwargs)

    return type(f"EntryGuarded{base.__name__}", (base,), {"put": put, "put_writes": put_writes})
