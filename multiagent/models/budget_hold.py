"""One model call in flight: its budget held and its one record.

:class:`CallInFlight` is a context manager around a call's attempt chain. Entering reserves the
call's worst case in the run and project budgets; leaving makes the call's one record, whatever
the exit: an answer (:meth:`CallInFlight.answered`), an exception (``error``), or the caller
giving up — ``asyncio.CancelledError``, ``GeneratorExit`` of a stream closed early,
``KeyboardInterrupt`` (``cancelled``). The reservation is settled to the record's cost or given
back, so nothing stays held.

A call stopped before anything was sent — Ctrl-C's or a taken-over entry's stop, a budget
refusing its reservation (:func:`not_sent`) — has its record too: ``cancelled``, 0 tokens, 0
attempts. Its chat span (and LangSmith run) was opened by LangChain before the pipeline ran, so
without the record a trace would count one call more than the ledger, ``--json`` and the
metrics do. The controller's own ``slot()`` / ``aslot()`` passages do the same
for one attempt's ticket.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from types import TracebackType
from typing import Any

from langchain_core.messages import BaseMessage

from multiagent.errors import BudgetExceededError
from multiagent.models.accounting import (
    DEFAULT_MAX_OUTPUT_TOKENS,
    STAMP_KEY,
    CallIdentity,
    output_estimate,
    usage_of,
)
from multiagent.models.ledger import CallRecord, Outcome
from multiagent.models.tokens import prompt_tokens, request_tools


class CallInFlight:
    """The budget, attempts and replies of one call, recorded once when it ends.

    Args:
        identity: Who calls which model, and where the call is recorded.
        messages: The prompt.
        kwargs: The call's keyword arguments (bound tools, ``max_tokens``).
        default_max_output: The model's own ``max_tokens``, if it has one.
    """

    def __init__(
        self,
        identity: CallIdentity,
        messages: Sequence[BaseMessage],
        kwargs: dict[str, Any],
        *,
        default_max_output: int | None,
    ) -> None:
        given = kwargs.get("max_tokens") or default_max_output
        self.max_output = given if isinstance(given, int) else DEFAULT_MAX_OUTPUT_TOKENS
        if "max_tokens" not in kwargs and default_max_output is None:
            # ask for no more than was reserved, so the reservation is a true worst case
            kwargs["max_tokens"] = self.max_output
        tools = request_tools(kwargs)
        self.identity = identity
        self.prompt_tokens = prompt_tokens(messages, tools=tools)
        self.worst_usd = identity.worst_case_of(self.prompt_tokens, max_output=self.max_output)
        self.attempts = 0
        self.seen: list[BaseMessage] = []
        self.record: CallRecord | None = None
        try:
            self._held = identity.hold(self.worst_usd)
        except BaseException as exc:  # refused (budget, a taken-over entry): nothing was sent
            self.record = not_sent(identity, exc)
            raise
        self._started = time.perf_counter()

    @property
    def pace_tokens(self) -> int:
        """Tokens the controller charges against tokens/min: prompt plus output allowance."""
        return self.prompt_tokens + self.max_output

    def __enter__(self) -> CallInFlight:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.record is None:
            # an exception is a failure; anything else (GeneratorExit included) the caller
            # giving up; a generator closed between chunks also exits here without one
            failed = isinstance(exc, Exception)
            record = self._finish("error" if failed else "cancelled", exc if failed else None)
            if exc is not None:
                # tracing reads the figures of a call that raised from what it raised, a
                # cancellation's (CancelledError, Ctrl-C) as a failure's (see observability.otel)
                _stamp(exc, record)
        self.identity.release(self._held)  # a settled hold is not released twice

    def answered(self) -> CallRecord:
        """Record the call as answered with the replies in :attr:`seen`."""
        return self._finish("ok", None)

    def _finish(self, outcome: Outcome, error: BaseException | None) -> CallRecord:
        used = usage_of(self.seen)
        estimated = used is None
        if used is None:
            answered_some = outcome == "ok" or bool(self.seen)
            used = (self.prompt_tokens, output_estimate(self.seen)) if answered_some else (0, 0)
        self.record = self.identity.finish(
            outcome,
            input_tokens=used[0],
            output_tokens=used[1],
            estimated=estimated and used != (0, 0),
            latency_s=time.perf_counter() - self._started,
            attempts=self.attempts,
            error=error,
            held=self._held,
        )
        return self.record


def not_sent(identity: CallIdentity, exc: BaseException) -> CallRecord:
    """Record a call that ``exc`` stopped before anything was sent, and put the record on
    ``exc`` for its span: ``cancelled`` (a stop, a budget refusal) or ``error`` (anything else),
    with 0 tokens and 0 attempts."""
    failed = isinstance(exc, Exception) and not isinstance(exc, BudgetExceededError)
    record = identity.finish(
        "error" if failed else "cancelled",
        input_tokens=0,
        output_tokens=0,
        estimated=False,
        latency_s=0.0,
        attempts=0,
        error=exc if failed else None,
    )
    _stamp(exc, record)
    return record


def _stamp(exc: BaseException, record: CallRecord) -> None:
    """Put ``record`` on ``exc``, where tracing reads a failed call's figures."""
    with contextlib.suppress(TypeError):  # an exception type without a __dict__
        vars(exc)[STAMP_KEY] = record
