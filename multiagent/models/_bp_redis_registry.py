"""One shared controller per (Redis, provider, base URL, model) per process, and the client.

:func:`connect` makes the limiter's Redis client (short timeouts, no retries: a lost Redis
falls back instead of hanging a call); :func:`shared_redis_controller` is the registry
:func:`multiagent.models.adaptive.shared_controller` uses when ``MULTIAGENT_REDIS_URL`` is set.
"""

from __future__ import annotations

import threading

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from multiagent._metrics import get_metrics
from multiagent._redis import unreachable
from multiagent.errors import ConfigError
from multiagent.models._bp_redis_controller import RedisBackpressureController
from multiagent.models._bp_redis_keeper import LOST
from multiagent.models._bp_types import BackpressureConfig
from multiagent.policies.settings import check_redis_url

# -- one controller per (Redis, provider, base URL, model) per process --------------------------

_REGISTRY_LOCK = threading.Lock()
_SHARED: dict[tuple[str, str, str, str], RedisBackpressureController] = {}


def connect(url: str) -> redis.Redis:
    """A pinged client for the limiter: short timeouts, no retries (a lost Redis falls back).

    Raises:
        ConfigError: The URL is malformed.
        UsageError: Nothing answers at the URL.
    """
    check_redis_url(url, source="MULTIAGENT_REDIS_URL")
    try:
        # one connection, taken under a lock (the limiter's commands are short): no pool
        # checkout per command, which costs redis-py more than the command's own work
        client = redis.Redis.from_url(
            url,
            decode_responses=True,
            socket_connect_timeout=1.0,
            socket_timeout=2.0,
            retry=Retry(NoBackoff(), 0),
            single_connection_client=True,  # connects at once: an absent server fails here
        )
    except ValueError as exc:
        raise ConfigError(f"malformed MULTIAGENT_REDIS_URL {url!r}: {exc}") from None
    except LOST as exc:
        raise unreachable(url, exc) from None
    try:
        client.ping()
    except LOST as exc:
        client.close()
        raise unreachable(url, exc) from None
    return client


def shared_redis_controller(
    *,
    provider: str,
    model: str,
    base_url: str | None,
    config: BackpressureConfig,
    redis_url: str,
    fallback_fraction: float = 0.5,
) -> RedisBackpressureController:
    """The process's Redis-shared controller for (provider, base URL, model), made on first use.

    Every process naming the same Redis and key shares one limit; within a process the same
    rules as :func:`~multiagent.models.adaptive.shared_controller` hold (one configuration per
    key). Exported to the metrics store as ``multiagent_backpressure_*{provider,model}``.

    Raises:
        ConfigError: The URL is malformed, or this key exists with another configuration.
        UsageError: Redis does not answer (at start; later outages fall back instead).
    """
    from multiagent.models import _controllers as adaptive  # the registry lives there

    endpoint = base_url or "default"
    with _REGISTRY_LOCK:
        existing = _SHARED.get((redis_url, provider, model, endpoint))
        if existing is not None:
            if existing.config != config:
                raise ConfigError(
                    adaptive._conflict(provider, endpoint, model, existing.config, config)
                )
            return existing
        client = connect(redis_url)
        controller = RedisBackpressureController(
            config,
            client=client,
            key=f"multiagent:bp:{provider}|{endpoint}|{model}",
            endpoint_key=f"multiagent:bp:{provider}|{endpoint}",
            labels={"provider": provider, "model": model},
            fallback_fraction=fallback_fraction,
        )
        _SHARED[(redis_url, provider, model, endpoint)] = controller
        remove = get_metrics().add_collector(controller.samples)

    def forget() -> None:
        remove()
        with _REGISTRY_LOCK:
            _SHARED.pop((redis_url, provider, model, endpoint), None)
        controller.close()
        client.close()

    with adaptive._REGISTRY_LOCK:
        adaptive._REMOVERS.append(forget)
    return controller
