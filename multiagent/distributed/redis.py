"""Open a checked connection to the Redis named by ``MULTIAGENT_REDIS_URL``.

A process that is told to share state through Redis must not start without it: the connection
is opened and pinged at once, and an unreachable server is one line naming the URL (exit 2),
never a traceback half-way through a run. :func:`redis_client` and :func:`async_redis_client`
are the sync and async twins around one helper that builds the client's options.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

import redis
import redis.asyncio as aioredis
from redis.exceptions import RedisError

# the helpers live low (multiagent._redis) so the runtime can use them without importing this
from multiagent._redis import CONNECT_TIMEOUT_S as CONNECT_TIMEOUT_S
from multiagent._redis import client_options as _client_options
from multiagent._redis import malformed
from multiagent._redis import unreachable as _unreachable
from multiagent.errors import ConfigError, UsageError
from multiagent.policies import Settings


def require_redis_url(settings: Settings, *, what: str) -> str:
    """The configured Redis URL; ``what`` (e.g. ``"--queue"``) names who needs it when unset."""
    if not settings.redis_url:
        raise UsageError(
            f"{what} needs a Redis server: set MULTIAGENT_REDIS_URL=redis://HOST:PORT/DB"
        )
    return settings.redis_url


@contextmanager
def redis_client(url: str) -> Iterator[redis.Redis]:
    """A connected, pinged client for ``url``; closed on exit.

    Raises:
        ConfigError: The URL is malformed.
        UsageError: Nothing answers at the URL (or it refuses the credentials).
    """
    try:
        client = redis.Redis.from_url(url, **_client_options(url))
    except ConfigError:
        raise
    except (ValueError, RedisError) as exc:
        raise malformed(url, exc) from None
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
        client = aioredis.Redis.from_url(url, **_client_options(url))
    except ConfigError:
        raise
    except (ValueError, RedisError) as exc:
        raise malformed(url, exc) from None
    try:
        try:
            await client.ping()
        except (RedisError, OSError) as exc:
            raise _unreachable(url, exc) from None
        yield client
    finally:
        await client.aclose()
