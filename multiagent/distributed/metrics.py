"""Each queue's depth, pending entries, consumers, throughput and dead letters as metric gauges.

:func:`queue_samples` reads every queue of a Redis server (streams under ``multiagent:queue:``)
at the moment it is asked; :func:`install_queue_metrics` registers it as a collector of the
process's metrics store, so ``/metrics`` and ``multiagent metrics show`` include these gauges
whenever ``MULTIAGENT_REDIS_URL`` is set. Every worker on every machine writes to the same Redis,
so these are the figures of the whole fleet, not of one process:

- ``queue_depth{queue}``: entries on the stream (waiting, plus taken but not acknowledged);
- ``queue_waiting{queue}``: entries no worker has taken yet;
- ``queue_pending{queue}``: entries taken by a worker and not acknowledged yet;
- ``queue_consumers{queue}``: workers that read the queue in the last minute;
- ``queue_throughput_per_s{queue}``: items (and runs) finished per second over the last minute;
- ``queue_completed{queue}``: items (and runs) finished since the queue was made;
- ``queue_dead_letters{queue}``: entries moved to the dead letters.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import redis
from redis.exceptions import RedisError

from multiagent._metrics import Sample, get_metrics
from multiagent.distributed.deadletter import dead_key, stats_key
from multiagent.distributed.queue import GROUP, PREFIX
from multiagent.policies import Settings

#: The window of the throughput gauge, and how recently a consumer must have read to count.
WINDOW_S = 60


def _queues(client: redis.Redis) -> list[str]:
    found = client.scan_iter(match=f"{PREFIX}queue:*", _type="STREAM", count=500)
    return sorted(str(key)[len(f"{PREFIX}queue:") :] for key in found)


def _group(client: redis.Redis, stream: str) -> dict[str, Any]:
    groups: Any = client.xinfo_groups(stream)
    for group in groups:
        if group.get("name") == GROUP:
            return dict(group)
    return {}


def queue_figures(client: redis.Redis, queue: str, *, now_s: int) -> dict[str, float]:
    """The figures of one queue (see the module docstring), ``now_s`` being the server's time."""
    stream = f"{PREFIX}queue:{queue}"
    group = _group(client, stream)
    consumers: Any = client.xinfo_consumers(stream, GROUP) if group else []
    buckets = [f"{stats_key(queue)}:{second}" for second in range(now_s - WINDOW_S + 1, now_s + 1)]
    finished = sum(int(value) for value in client.mget(buckets) if value is not None)
    depth = int(client.xlen(stream))
    pending = int(group.get("pending", 0))
    lag = group.get("lag")
    return {
        "depth": depth,
        "waiting": float(lag) if lag is not None else float(max(0, depth - pending)),
        "pending": pending,
        "consumers": sum(1 for c in consumers if int(c.get("idle", 0)) <= WINDOW_S * 1000),
        "throughput_per_s": finished / WINDOW_S,
        "completed": int(client.get(f"{stats_key(queue)}:total") or 0),
        "dead_letters": int(client.xlen(dead_key(queue))),
    }


def queue_samples(client: redis.Redis) -> list[Sample]:
    """Gauge samples ``queue_*{queue}`` of every queue; none when Redis does not answer."""
    try:
        now_s = int(client.time()[0])
        samples: list[Sample] = []
        for queue in _queues(client):
            for name, value in queue_figures(client, queue, now_s=now_s).items():
                samples.append((f"queue_{name}", {"queue": queue}, float(value)))
        return samples
    except (RedisError, OSError):  # a scrape never fails because Redis is away
        return []


def install_queue_metrics(settings: Settings) -> Callable[[], None]:
    """Add the queue gauges to this process's metrics when Redis is configured; return the
    remover (which also closes the connection). Without Redis nothing is added."""
    if not settings.redis_url:
        return lambda: None
    from multiagent._redis import client_options

    client = redis.Redis.from_url(settings.redis_url, **client_options(settings.redis_url))
    remove = get_metrics().add_collector(lambda: queue_samples(client))

    def uninstall() -> None:
        remove()
        client.close()

    return uninstall


def queues_summary(settings: Settings) -> dict[str, dict[str, float]] | None:
    """Every queue's figures by name (for ``metrics show``); ``None`` without Redis."""
    if not settings.redis_url:
        return None
    from multiagent.distributed.redis import redis_client

    with redis_client(settings.redis_url) as client:
        summary: dict[str, dict[str, float]] = {}
        for name, labels, value in queue_samples(client):
            summary.setdefault(labels["queue"], {})[name.removeprefix("queue_")] = value
    return summary
