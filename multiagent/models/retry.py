"""The one retry loop between a node and a provider (tenacity).

Exponential backoff with *full jitter* (the wait is drawn uniformly from ``[0, base·2ⁿ]``, capped,
as in the AWS architecture blog's comparison of jitter schemes): clients that failed together do
not come back together. The server's ``Retry-After`` is a floor under that draw. Only retryable
failures are retried (:func:`multiagent.models.provider_errors.is_retryable`); the provider
clients' own retries are off (``max_retries=0`` in :mod:`multiagent.models.factory`), so a 429 is
never retried twice over.

Each attempt goes through the backpressure controller again (see
:mod:`multiagent.models.pipeline_model`), so a retry is paced and waits out a provider pause like
any other request.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import tenacity
from tenacity.wait import wait_base

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


class FullJitterAfterFloor(wait_base):
    """Full-jitter exponential backoff whose draw never goes below the server's Retry-After."""

    def __init__(self, policy: RetryPolicy, *, rng: random.Random | None = None) -> None:
        self.policy = policy
        self.rng = rng or random.Random()

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        ceiling = min(self.policy.cap_s, self.policy.base_s * 2 ** (retry_state.attempt_number - 1))
        draw = self.rng.uniform(0.0, ceiling)
        outcome = retry_state.outcome
        exc = outcome.exception() if outcome is not None else None
        floor = retry_after_s(exc) if exc is not None else None
        return max(draw, floor or 0.0)


def _retry_if(retry_state: tenacity.RetryCallState) -> bool:
    outcome = retry_state.outcome
    if outcome is None or not outcome.failed:
        return False
    exc = outcome.exception()
    return exc is not None and is_retryable(exc)


def _before_sleep(model: str, hook: RetryHook | None) -> Callable[[tenacity.RetryCallState], None]:
    def before_sleep(retry_state: tenacity.RetryCallState) -> None:
        outcome = retry_state.outcome
        exc = outcome.exception() if outcome is not None else None
        if exc is None:
            return
        wait = retry_state.upcoming_sleep
        get_metrics().inc("model_retries_total", labels={"model": model, "kind": error_kind(exc)})
        if hook is not None:
            hook(exc, retry_state.attempt_number, wait)

    return before_sleep


def sync_retrying(
    policy: RetryPolicy,
    *,
    model: str = "",
    on_retry: RetryHook | None = None,
    sleep: Callable[[float], None] = time.sleep,
    rng: random.Random | None = None,
) -> tenacity.Retrying:
    """Return a tenacity ``Retrying`` that applies ``policy``; the last error is re-raised.

    Args:
        policy: Attempts and backoff bounds.
        model: Model name for the ``multiagent_model_retries_total`` counter.
        on_retry: Called before each sleep with the error, the failed attempt's number, the wait.
        sleep: Sleep function (a test passes a recorder).
        rng: Random source for the jitter.
    """
    return tenacity.Retrying(
        stop=tenacity.stop_after_attempt(policy.attempts),
        wait=FullJitterAfterFloor(policy, rng=rng),
        retry=_retry_if,
        before_sleep=_before_sleep(model, on_retry),
        sleep=sleep,
        reraise=True,
    )


def async_retrying(
    policy: RetryPolicy,
    *,
    model: str = "",
    on_retry: RetryHook | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    rng: random.Random | None = None,
) -> tenacity.AsyncRetrying:
    """Return the ``AsyncRetrying`` twin of :func:`sync_retrying`."""
    return tenacity.AsyncRetrying(
        stop=tenacity.stop_after_attempt(policy.attempts),
        wait=FullJitterAfterFloor(policy, rng=rng),
        retry=_retry_if,
        before_sleep=_before_sleep(model, on_retry),
        sleep=sleep,
        reraise=True,
    )
