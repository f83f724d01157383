"""The Redis connection every layer shares: options, a checked connect, one-line errors.

Both the runtime (:mod:`multiagent.models`, e.g. shared budgets) and the distributed queue
(:mod:`multiagent.distributed`) open Redis through these helpers, so this module sits low:
it imports only the errors and the settings' URL check.
"""

from __future__ import annotations

from typing import Any

import redis
from redis.exceptions import RedisError

from multiagent.errors import ConfigError, UsageError
from multiagent.policies.settings import check_redis_url

#: Seconds to wait for the server when connecting; a dead address fails fast.
CONNECT_TIMEOUT_S = 3.0


def client_options(url: str) -> dict[str, Any]:
    """Options shared by every client: text replies, bounded connect time, no timeout on reads
    (workers block on the stream), health checks so a dropped connection is noticed."""
    check_redis_url(url, source="the caller")
    return {
        "decode_responses": True,
        "socket_connect_timeout": CONNECT_TIMEOUT_S,
        "health_check_interval": 30,
        "retry_on_timeout": False,
    }


def unreachable(url: str, exc: Exception) -> UsageError:
    """The one line for a server that does not answer at ``url`` (credentials hidden)."""
    shown = url.split("@")[-1] if "@" in url else url
    reason = " ".join(str(exc).split()) or type(exc).__name__
    return UsageError(f"cannot reach Redis at MULTIAGENT_REDIS_URL {shown!r}: {reason}")


def malformed(url: str, exc: Exception) -> ConfigError:
    """The one line for a URL the client cannot parse."""
    return ConfigError(f"malformed MULTIAGENT_REDIS_URL {url!r}: {exc}")


def open_redis(
    url: str, *, socket_timeout: float | None = None, decode_responses: bool = True
) -> redis.Redis:
    """A connected, pinged client for ``url`` (the caller closes it).

    Args:
        url: The Redis URL.
        socket_timeout: Seconds a command may wait for its reply (``None``: no limit).
        decode_responses: Text replies (``False``: bytes, for stored binary values).

    Raises:
        ConfigError: The URL is malformed.
        UsageError: Nothing answers at the URL (or it refuses the credentials).
    """
    options = client_options(url) | {
        "socket_timeout": socket_timeout,
        "decode_responses": decode_responses,
    }
    try:
        client = redis.Redis.from_url(url, **options)
    except (ValueError, RedisError) as exc:
        raise malformed(url, exc) from None
    try:
        client.ping()
    except (RedisError, OSError) as exc:
        client.close()
        raise unreachable(url, exc) from None
    return client
