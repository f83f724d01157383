"""The one retry loop between a node and a provider.

Exponential backoff with *full jitter* (the wait is drawn uniformly from ``[0, base·2ⁿ]``, capped,
as in the AWS architecture blog's comparison of jitter schemes): clients that failed together do
not come back together. The server's ``Retry-After`` is a floor under that draw. Only retryable
failures are retried (:func:`multiagent.models.provider_errors.is_retryable`); the provider
clients' own retries are off (``max_retries=0`` in :mod:`multiagent.models.factory`), so a 429 is
never retried twice over.

Each attempt goes through the backpressure controller again (see
:mod:`multiagent.models.pipeline_model`), so a retry is paced and waits out a provider pause like
any other request.

The loop keeps tenacity's shape (``for attempt in sync_retrying(...): with attempt: ...``) but
is a few lines of its own: tenacity builds a ``Retrying`` with its strategies and a call state
for every call, which cost about 25 µs per call on the happy path of a zero-latency model,
where nearly every call succeeds at once. Here the first attempt costs one small object; the
backoff is computed only after a failure. The semantics are tenacity's as configured before:
stop after ``attempts``, retry only retryable errors, wait full jitter floored by
``Retry-After``, count and report each retry before sleeping, re-raise the last error.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from types import TracebackType

from multiagent.models.provider_errors import error_kind, is_retryable, retry_after_s
from multiagent.observability.metrics import get_metrics

#: Called before sleeping between attempts: (exception, attempt number that failed, wait in s).
RetryHook = Callable[[BaseException, int, float], None]


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
    policy: RetryPolicy, *, failed: int, error: BaseException, rng: random.Random
) -> float:
    """The wait after failed attempt number ``failed``: full jitter, floored by Retry-After."""
    ceiling = min(policy.cap_s, policy.base_s * 2 ** (failed - 1))
    draw = rng.uniform(0.0, ceiling)
    return max(draw, retry_after_s(error) or 0.0)


class Attempt:
    """One attempt: ``with attempt:`` keeps an ``Exception`` raised in the block for the loop.

    Anything else (``CancelledError``, ``KeyboardInterrupt``, ``GeneratorExit``) is never
    retried and propagates at once.
    """

    __slots__ = ("error", "number")

    def __init__(self, number: int) -> None:
        self.number = number
        self.error: Exception | None = None

    def __enter__(self) -> Attempt:
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


class _Loop:
    """What the sync and async loops share: when to stop, how long to wait, what to count."""

    def __init__(
        self,
        policy: RetryPolicy,
        *,
        model: str,
        on_retry: RetryHook | None,
        rng: random.Random | None,
    ) -> None:
        self.policy = policy
        self.model = model
        self.on_retry = on_retry
        self.rng = rng
        self.attempt: Attempt | None = None

    def next_wait(self) -> float | None:
        """``None`` for a first attempt or after a success (stop); else the wait before the
        next attempt. Raises the last error when it is final."""
        last = self.attempt
        if last is None:
            return 0.0
        error = last.error
        if error is None:
            return None
        if last.number >= self.policy.attempts or not is_retryable(error):
            raise error
        rng = self.rng or _RNG
        wait = backoff_s(self.policy, failed=last.number, error=error, rng=rng)
        get_metrics().inc(
            "model_retries_total", labels={"model": self.model, "kind": error_kind(error)}
        )
        if self.on_retry is not None:
            self.on_retry(error, last.number, wait)
        return wait

    def new_attempt(self) -> Attempt:
        """The next attempt (numbered from 1)."""
        number = 1 if self.attempt is None else self.attempt.number + 1
        self.attempt = Attempt(number)
        return self.attempt


_RNG = random.Random()


class SyncRetrying(_Loop):
    """``for attempt in SyncRetrying(...): with attempt: ...`` (see :func:`sync_retrying`)."""

    def __init__(
        self,
        policy: RetryPolicy,
        *,
        model: str,
        on_retry: RetryHook | None,
        sleep: Callable[[float], None],
        rng: random.Random | None,
    ) -> None:
        super().__init__(policy, model=model, on_retry=on_retry, rng=rng)
        self._sleep = sleep

    def __iter__(self) -> Iterator[Attempt]:
        return self

    def __next__(self) -> Attempt:
        first = self.attempt is None
        wait = self.next_wait()
        if wait is None:
            raise StopIteration
        if not first:
            self._sleep(wait)
        return self.new_attempt()


class AsyncRetrying(_Loop):
    """``async for attempt in AsyncRetrying(...): with attempt: ...``."""

    def __init__(
        self,
        policy: RetryPolicy,
        *,
        model: str,
        on_retry: RetryHook | None,
        sleep: Callable[[float], Awaitable[None]],
        rng: random.Random | None,
    ) -> None:
        super().__init__(policy, model=model, on_retry=on_retry, rng=rng)
        self._sleep = sleep

    def __aiter__(self) -> AsyncIterator[Attempt]:
        return self

    async def __anext__(self) -> Attempt:
        first = self.attempt is None
        wait = self.next_wait()
        if wait is None:
            raise StopAsyncIteration
        if not first:
            await self._sleep(wait)
        return self.new_attempt()


def sync_retrying(
    policy: RetryPolicy,
    *,
    model: str = "",
    on_retry: RetryHook | None = None,
    sleep: Callable[[float], None] = time.sleep,
    rng: random.Random | None = None,
) -> SyncRetrying:
    """Return the retry loop that applies ``policy``; the last error is re-raised.

    Args:
        policy: Attempts and backoff bounds.
        model: Model name for the ``multiagent_model_retries_total`` counter.
        on_retry: Called before each sleep with the error, the failed attempt's number, the wait.
        sleep: Sleep function (a test passes a recorder).
        rng: Random source for the jitter.
    """
    return SyncRetrying(policy, model=model, on_retry=on_retry, sleep=sleep, rng=rng)


def async_retrying(
    policy: RetryPolicy,
    *,
    model: str = "",
    on_retry: RetryHook | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    rng: random.Random | None = None,
) -> AsyncRetrying:
    """Return the async twin of :func:`sync_retrying`."""
    return AsyncRetrying(policy, model=model, on_retry=on_retry, sleep=sleep, rng=rng)
