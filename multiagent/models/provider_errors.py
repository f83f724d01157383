"""What a provider's failure means: retry it or not, how long the server asked us to wait.

The ``openai`` SDK's exceptions carry the HTTP response, so status codes and headers are read
from them; the simulated model raises the same types, so one classification serves both.
Retryable: 408, 409, 429, 5xx, timeouts and connection errors. Never retried: 400, 401, 403,
404, 422 and anything that is not a provider error (a bug in our code must surface at once).
"""

from __future__ import annotations

import email.utils
import math
import re
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any, Literal

ErrorKind = Literal["rate_limit", "server", "timeout", "connection", "client", "other"]

_RETRYABLE_STATUS = frozenset({408, 409, 429})
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
#: Longest wait a server may ask for that we honour; beyond it the value is taken as nonsense.
MAX_RETRY_AFTER_S = 120.0


def _openai() -> Any:
    """The ``openai`` SDK if this process has imported it, else ``None``.

    An exception of the SDK's types means the SDK is loaded; looking it up instead of importing
    it keeps a third of a second of imports off every run that never talks to OpenAI.
    """
    return sys.modules.get("openai")


def status_of(exc: BaseException) -> int | None:
    """Return the HTTP status code carried by ``exc``, if any."""
    openai = _openai()
    if openai is not None and isinstance(exc, openai.APIStatusError):
        return int(exc.status_code)
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    return int(status) if isinstance(status, int) else None


def error_kind(exc: BaseException) -> ErrorKind:
    """Classify ``exc`` for metrics and for the backpressure controller."""
    openai = _openai()
    if isinstance(exc, TimeoutError) or (openai and isinstance(exc, openai.APITimeoutError)):
        return "timeout"
    if isinstance(exc, ConnectionError) or (openai and isinstance(exc, openai.APIConnectionError)):
        return "connection"
    status = status_of(exc)
    if status == 429:
        return "rate_limit"
    if status is not None and status >= 500:
        return "server"
    if status is not None and 400 <= status < 500:
        return "client"
    name = type(exc).__name__
    if "Timeout" in name:
        return "timeout"
    if "Connect" in name or "RemoteProtocol" in name:
        return "connection"
    return "other"


def is_retryable(exc: BaseException) -> bool:
    """Return whether a call that failed with ``exc`` may be sent again.

    Rate limits, server errors (5xx), 408/409, timeouts and connection errors are retryable;
    every other client error (400, 401, 403, 404, 422, ...) and every non-provider exception is
    not. A ``Retry-After`` above :data:`MAX_RETRY_AFTER_S` makes a 429 final, as the OpenAI SDK
    does.
    """
    kind = error_kind(exc)
    if kind in ("timeout", "connection", "server"):
        return True
    if kind == "rate_limit":
        wait = retry_after_s(exc)
        return wait is None or wait <= MAX_RETRY_AFTER_S
    status = status_of(exc)
    return status in _RETRYABLE_STATUS


def _headers_of(exc: BaseException) -> Mapping[str, str] | None:
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    return headers if headers is not None else None


def parse_duration(value: str) -> float | None:
    """Parse OpenAI's reset durations (``"20ms"``, ``"1.5s"``, ``"6m0s"``) or plain seconds."""
    text = value.strip()
    try:
        return float(text)
    except ValueError:
        pass
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        return None
    return sum(float(n) * _UNIT_S[u] for n, u in parts)


def retry_after_from_headers(
    headers: Mapping[str, str], *, wall_clock: Callable[[], float] = time.time
) -> float | None:
    """Seconds the server asked us to wait, from response headers, or ``None``.

    Order: ``retry-after-ms``; ``retry-after`` (seconds or an HTTP date); then the
    ``x-ratelimit-reset-*`` headers, using the dimensions whose ``x-ratelimit-remaining-*`` is 0
    (or all of them when none says so), taking the longest.
    """
    lowered = {k.lower(): v for k, v in headers.items()}
    if (ms := lowered.get("retry-after-ms")) is not None:
        try:
            return _sane(float(ms) / 1000.0)
        except ValueError:
            pass
    if (after := lowered.get("retry-after")) is not None:
        try:
            return _sane(float(after))
        except ValueError:
            parsed = email.utils.parsedate_tz(after)
            if parsed is not None:
                return _sane(email.utils.mktime_tz(parsed) - wall_clock())
    resets = {
        key.removeprefix("x-ratelimit-reset-"): parse_duration(value)
        for key, value in lowered.items()
        if key.startswith("x-ratelimit-reset-")
    }
    known = {dim: s for dim, s in resets.items() if s is not None}
    if not known:
        return None
    exhausted = [
        s for dim, s in known.items() if lowered.get(f"x-ratelimit-remaining-{dim}") == "0"
    ]
    return _sane(max(exhausted or known.values()))


def _sane(seconds: float) -> float | None:
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


def retry_after_s(exc: BaseException) -> float | None:
    """Seconds the server asked us to wait before the next request, read from ``exc``."""
    headers = _headers_of(exc)
    return retry_after_from_headers(headers) if headers is not None else None


def headers_of(exc: BaseException) -> Mapping[str, str] | None:
    """The HTTP response headers carried by ``exc``, if any."""
    return _headers_of(exc)


def advertised_limits(headers: Mapping[str, str]) -> tuple[float | None, float | None]:
    """Requests/s and tokens/s from ``x-ratelimit-limit-requests`` / ``-tokens`` (per minute).

    OpenAI (and the project's simulator) send these on every response; other OpenAI-compatible
    servers may not, and then both values are ``None``.
    """
    lowered = {k.lower(): v for k, v in headers.items()}

    def per_second(name: str) -> float | None:
        value = lowered.get(name)
        if value is None:
            return None
        try:
            per_minute = float(value)
        except ValueError:
            return None
        return per_minute / 60.0 if per_minute > 0 and math.isfinite(per_minute) else None

    return per_second("x-ratelimit-limit-requests"), per_second("x-ratelimit-limit-tokens")
