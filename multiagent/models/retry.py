"""The one retry loop between a node and a provider (tenacity, entered after a first failure).

Exponential backoff with *full jitter* (the wait is drawn uniformly from ``[0, base·2ⁿ]``, capped,
as in the AWS architecture blog's comparison of jitter schemes): clients that failed together do
not come back together. The server's ``Retry-After`` is a floor under that draw. Only retryable
failures are retried (:func:`multiagent.models.provider_errors.is_retryable`); the provider
clients' own retries are off (``max_retries=0`` in :mod:`multiagent.models.factory`, on a brought
model's client too, and a brought ``.with_retry()`` wrapper is refused), so a 429 is never
retried twice over and each attempt here is one request the limiter sees.

Each attempt goes through the backpressure controller again (see
:mod:`multiagent.models._pipeline_calls`), so a retry is paced and waits out a provider pause like
any other request.

The loop has tenacity's shape (``for attempt in sync_retrying(...): with attempt: ...``). The
first attempt is a small object of ours: tenacity builds a ``Retrying`` with its strategies and a
call state for every call, about 25 µs on the happy path of a zero-latency model where nearly
every call succeeds at once. Only after a retryable failure does tenacity take over, for the
attempts that are left, with the same stop, wait, retry and reporting as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import tenacity
from tenacity.wait import wait_base

from multiagent._interrupt import wait_or_stop
from multiagent._metrics import get_metrics
from multiagent.models.provider_errors import error_kind, is_retryable, retry_after_s

#: Called before sleeping between attempts: (exception, attempt number that failed, wait in s).
RetryHook = Callable[[BaseException, int, float], None]

#: Set while a call asks something the provider may not support: a server error then answers
#: the question (see :func:`server_errors_final`) and is not retried.
_SERVER_ERRORS_FINAL: ContextVar[bool] = ContextVar("multiagent_server_errors_final", default=False)


@contextlib.contextmanager
def server_errors_final() -> Iterator[None]:
    """Within the block, a call that fails with a server error (5xx) is not retried.

    For a request whose kind the provider may not take, when the caller has another way to ask:
    the structured-output ladder probing a JSON mode. llama.cpp's server answers
    ``response_format={"type": "json_schema"}`` with a 500; retried, that refusal cost every
    process about 2.5 s of backoff before the ladder went on to the next step.
    """
    token = _SERVER_ERRORS_FINAL.set(True)
    try:
        yield
    finally:
        _SERVER_ERRORS_FINAL.reset(token)


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently a call is retried.

    Attributes:
        attempts: Total attempts, the first included (the profile's ``retry_attempts``).
        base_s: Upper bound of the first jittered wait.
        cap_s: Upper bound of any jittered wait (a longer ``Retry-After`` still wins).
    """

    attempts: int = 3
    base_s: float = 0.5
    cap_s: float = 20.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"attempts must be at least 1, got {self.attempts}")


def backoff_s(
    policy: RetryPolicy, *, failed: int, error: BaseException | None, rng: random.Random
) -> float:
    """The wait after failed attempt number ``failed``: full jitter, floored by Retry-After."""
    ceiling = min(policy.cap_s, policy.base_s * 2 ** (failed - 1))
    draw = rng.uniform(0.0, ceiling)
    floor = retry_after_s(error) if error is not None else None
    return max(draw, floor or 0.0)


class FullJitterAfterFloor(wait_base):
    """:func:`backoff_s` as a tenacity wait; ``offset`` attempts ran before tenacity's first."""

    def __init__(self, policy: RetryPolicy, *, rng: random.Random, offset: int = 0) -> None:
        self.policy = policy
        self.rng = rng
        self.offset = offset

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        outcome = retry_state.outcome
        error = outcome.exception() if outcome is not None else None
        failed = retry_state.attempt_number + self.offset
        return backoff_s(self.policy, failed=failed, error=error, rng=self.rng)


def _retry_if(retry_state: tenacity.RetryCallState) -> bool:
    outcome = retry_state.outcome
    if outcome is None or not outcome.failed:
        return False
    exc = outcome.exception()
    return exc is not None and is_retryable(exc)


def _report(
    model: str, hook: RetryHook | None, error: BaseException, failed: int, wait: float
) -> None:
    """Count a retry and tell the hook, before sleeping."""
    get_metrics().inc("model_retries_total", labels={"model": model, "kind": error_kind(error)})
    if hook is not None:
        hook(error, failed, wait)


def _before_sleep(
    model: str, hook: RetryHook | None, *, offset: int
) -> Callable[[tenacity.RetryCallState], None]:
    def before_sleep(retry_state: tenacity.RetryCallState) -> None:
        outcome = retry_state.outcome
        exc = outcome.exception() if outcome is not None else None
        if exc is not None:
            wait = retry_state.upcoming_sleep
            _report(model, hook, exc, retry_state.attempt_number + offset, wait)

    return before_sleep


class FirstAttempt:
    """The first attempt: ``with attempt:`` keeps an ``Exception`` raised in the block.

    Anything else (``CancelledError``, ``KeyboardInterrupt``, ``GeneratorExit``) is never
    retried and propagates at once.
    """

    __slots__ = ("error",)

    def __init__(self) -> None:
        self.error: Exception | None = None

    def __enter__(self) -> FirstAttempt:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        if isinstance(exc, Exception):
            self.error = exc
            return True
        return False


def _after_first(
    first: FirstAttempt,
    policy: RetryPolicy,
    *,
    model: str,
    on_retry: RetryHook | None,
    rng: random.Random,
) -> tuple[float, dict[str, Any]] | None:
    """``None`` when the first attempt answered; raise its error when it is final; else the
    wait before the second attempt and tenacity's arguments for the attempts left."""
    error = first.error
    if error is None:
        return None
    if policy.attempts == 1 or not is_retryable(error):
        raise error
    if _SERVER_ERRORS_FINAL.get() and error_kind(error) == "server":
        raise error
    wait = backoff_s(policy, failed=1, error=error, rng=rng)
    _report(model, on_retry, error, 1, wait)
    rest = {
        "stop": tenacity.stop_after_attempt(policy.attempts - 1),
        "wait": FullJitterAfterFloor(policy, rng=rng, offset=1),
        "retry": _retry_if,
        "before_sleep": _before_sleep(model, on_retry, offset=1),
        "reraise": True,
    }
    return wait, rest


_RNG = random.Random()


def sync_retrying(
    policy: RetryPolicy,
    *,
    model: str = "",
    on_retry: RetryHook | None = None,
    sleep: Callable[[float], None] = wait_or_stop,
    rng: random.Random | None = None,
) -> Iterator[Any]:
    """Yield attempts that apply ``policy``; the last error is re-raised.

    Args:
        policy: Attempts and backoff bounds.
        model: Model name for the ``multiagent_model_retries_total`` counter.
        on_retry: Called before each sleep with the error, the failed attempt's number, the wait.
        sleep: Sleep function (a test passes a recorder); by default Ctrl-C or the run given
            up ends the wait (see :mod:`multiagent._interrupt`).
        rng: Random source for the jitter.
    """
    first = FirstAttempt()
    yield first
    after = _after_first(first, policy, model=model, on_retry=on_retry, rng=rng or _RNG)
    if after is None:
        return
    wait, rest = after
    sleep(wait)
    yield from tenacity.Retrying(sleep=sleep, **rest)


async def async_retrying(
    policy: RetryPolicy,
    *,
    model: str = "",
    on_retry: RetryHook | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    rng: random.Random | None = None,
) -> AsyncIterator[Any]:
    """The async twin of :func:`sync_retrying`."""
    first = FirstAttempt()
    yield first
    after = _after_first(first, policy, model=model, on_retry=on_retry, rng=rng or _RNG)
    if after is None:
        return
    wait, rest = after
    await sleep(wait)
    async for attempt in tenacity.AsyncRetrying(sleep=sleep, **rest):
        yield attempt
