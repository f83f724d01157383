"""Which failures are retried, how long we wait, and how often we try."""

from __future__ import annotations

import email.utils
import random

import httpx2
import openai
import pytest

from multiagent._metrics import get_metrics
from multiagent.models._openai_direct import status_error_class
from multiagent.models.provider_errors import (
    advertised_limits,
    error_kind,
    is_retryable,
    parse_duration,
    retry_after_from_headers,
    retry_after_s,
)
from multiagent.models.retry import RetryPolicy, sync_retrying
from multiagent.sim.model import rate_limit_error, server_error, timeout_error


def run_failing(
    policy: RetryPolicy, error: Exception, waits: list[float], **options: object
) -> int:
    """Run a call that always fails with ``error``; return the attempts made."""
    attempts = 0
    try:
        for attempt in sync_retrying(policy, sleep=waits.append, **options):  # type: ignore[arg-type]
            with attempt:
                attempts += 1
                raise error
    except type(error):
        return attempts
    raise AssertionError("the last error was not re-raised")


def status_error(status: int, headers: dict[str, str] | None = None) -> openai.APIStatusError:
    request = httpx2.Request("POST", "http://127.0.0.1/v1/chat/completions")
    response = httpx2.Response(status, headers=headers or {}, request=request)
    return status_error_class(status)(f"status {status}", response=response, body=None)


@pytest.mark.parametrize("status", [409, 429, 500, 502, 503])
def test_rate_limits_server_errors_and_conflicts_are_retried(status: int) -> None:
    assert is_retryable(status_error(status))


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
def test_client_errors_are_never_retried(status: int) -> None:
    assert not is_retryable(status_error(status))
    assert error_kind(status_error(status)) == "client"


def test_timeouts_and_connection_errors_are_retried_bugs_are_not() -> None:
    request = httpx2.Request("POST", "http://127.0.0.1/v1")
    assert is_retryable(timeout_error())
    assert error_kind(timeout_error()) == "timeout"
    assert is_retryable(openai.APIConnectionError(request=request))
    assert error_kind(openai.APIConnectionError(request=request)) == "connection"
    assert not is_retryable(ValueError("a bug"))
    assert not is_retryable(KeyError("a bug"))


def test_a_429_asking_for_minutes_is_final() -> None:
    assert not is_retryable(status_error(429, {"retry-after": "600"}))
    assert is_retryable(status_error(429, {"retry-after": "30"}))


def test_retry_after_headers_in_order_of_precision() -> None:
    assert retry_after_s(status_error(429, {"retry-after-ms": "250", "retry-after": "1"})) == 0.25
    assert retry_after_s(status_error(429, {"retry-after": "3"})) == 3.0
    later = email.utils.formatdate(1_000_010.0, usegmt=True)
    waited = retry_after_from_headers({"retry-after": later}, wall_clock=lambda: 1_000_000.0)
    assert waited == pytest.approx(10.0)
    resets = {
        "x-ratelimit-reset-requests": "20ms",
        "x-ratelimit-remaining-requests": "5",
        "x-ratelimit-reset-tokens": "6m0s",
        "x-ratelimit-remaining-tokens": "0",
    }
    assert retry_after_from_headers(resets) == 360.0  # the exhausted dimension decides
    assert retry_after_s(server_error()) is None


def test_durations_and_advertised_limits_parse() -> None:
    assert parse_duration("1.5s") == 1.5
    assert parse_duration("1m30s") == 90.0
    assert parse_duration("20ms") == pytest.approx(0.02)
    assert parse_duration("soon") is None
    headers = {"x-ratelimit-limit-requests": "1200", "x-ratelimit-limit-tokens": "60000"}
    assert advertised_limits(headers) == (20.0, 1000.0)
    assert advertised_limits({}) == (None, None)


def test_full_jitter_backoff_with_the_server_floor_and_profile_attempts() -> None:
    waits: list[float] = []
    policy = RetryPolicy(attempts=5, base_s=0.5, cap_s=4.0)
    before = get_metrics().counter("model_retries_total", labels={"model": "m", "kind": "server"})
    attempts = run_failing(policy, server_error(), waits, model="m", rng=random.Random(1))
    assert attempts == 5
    assert len(waits) == 4
    for n, wait in enumerate(waits, start=1):
        assert 0.0 <= wait <= min(4.0, 0.5 * 2 ** (n - 1))
    after = get_metrics().counter("model_retries_total", labels={"model": "m", "kind": "server"})
    assert after - before == 4

    waits.clear()
    assert run_failing(RetryPolicy(attempts=3, base_s=0.01), rate_limit_error(2.0), waits) == 3
    assert waits == [2.0, 2.0]  # the jitter never undercuts the server's Retry-After


def test_non_retryable_errors_fail_on_the_first_attempt() -> None:
    waits: list[float] = []
    assert run_failing(RetryPolicy(attempts=6), status_error(400), waits) == 1
    assert waits == []


def test_a_call_that_recovers_returns_its_value() -> None:
    calls = 0
    waits: list[float] = []
    for attempt in sync_retrying(RetryPolicy(attempts=4, base_s=0.001), sleep=waits.append):
        with attempt:
            calls += 1
            if calls < 3:
                raise timeout_error()
            value = "ok"
    assert value == "ok"
    assert calls == 3
    assert len(waits) == 2  # full jitter under 0.001 s, then under 0.002 s
    assert 0 <= waits[0] <= 0.001
    assert 0 <= waits[1] <= 0.002
    with pytest.raises(ValueError):
        RetryPolicy(attempts=0)
