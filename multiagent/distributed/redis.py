"""Open a checked connection to the Redis named by ``MULTIAGENT_REDIS_URL``.

A process that is told to share state through Redis must not start without it: the connection
is opened and pinged at once, and an unreachable server is one line naming the URL (exit 2),
never a traceback half-way through a run. :func:`redis_client` and :func:`async_redis_client`
are the sync and async twins around one helper that builds the client's options.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import redis
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from multiagent.errors import ConfigError, UsageError
from multiagent.policies import Settings
from multiagent.policies.settings import check_redis_url

#: Seconds to wait for the server when connecting; a dead address fails fast.
CONNECT_TIMEOUT_S = 3.0


def require_redis_url(settings: Settings, *, what: str) -> str:
    """The configured Redis URL; ``what`` (e.g. ``"--queue"``) names who needs it when unset."""
    if not settings.redis_url:
        raise UsageError(
            f"{what} needs a Redis server: set MULTIAGENT_REDIS_URL=redis://HOST:PORT/DB"
        )
    return settings.redis_url


def client_options(url: str) -> dict[str, Any]:
    """Options shared by both twins: text replies, bounded connect time, no timeout on reads
    (workers block on the stream), health checks so a dropped connection is noticed."""
    check_redis_url(url, source="the caller")
    return {
        "decode_responses": True,
        "socket_connect_timeout": CONNECT_TIMEOUT_S,
        "health_check_interval": 30,
        "retry_on_timeout": False,
    }


def _unreachable(url: str, exc: Exception) -> UsageError:
    shown = url.split("@")[-1] if "@" in url else url
    reason = " ".join(str(exc).split()) or type(exc).__name__
    return UsageError(f"cannot reach Redis at MULTIAGENT_REDIS_URL {shown!r}: {reason}")


@contextmanager
def redis_client(url: str) -> Iterator[redis.Redis]:
    """A connected, pinged client for ``url``; closed on exit.

    Raises:
        ConfigError: The URL is malformed.
        UsageError: Nothing answers at the URL (or it refuses the credentials).
    """
    try:
        client = redis.Redis.from_url(url, **client_options(url))
    except ConfigError:
        raise
    except (ValueError, RedisError) as exc:
        raise ConfigError(f"malformed MULTIAGENT_REDIS_URL {url!r}: {exc}") from None
    try:
        try:
            client.ping()
        except (RedisError, OSError) as exc:
            raise _unreachable(url, exc) from None
        yield client
    finally:
        client.close()


@asynccontextmanager
async def async_redis_client(url: str) -> AsyncIterator[aioredis.Redis]:
    """The async twin of :func:`redis_client`."""
    try:
        client = aioredis.Redis.from_url(url, **client_options(url))
    except ConfigError:
        raise
    except (ValueError, RedisError) as exc:
        raise ConfigError(f"malformed MULTIAGENT_REDIS_URL {url!r}: {exc}") from None
    try:
        try:
            await client.ping()
        except (RedisError, OSError) as exc:
            raise _unreachable(url, exc) from None
        yield client
    finally:
        await client.aclose()
