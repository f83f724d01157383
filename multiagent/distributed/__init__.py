"""Coordination across processes and machines through Redis: the connection and batch queues.

Nothing here is imported unless ``MULTIAGENT_REDIS_URL`` (or ``--queue``) asks for it: the
embedded default runs in one process without Redis.
"""

from multiagent.distributed.redis import async_redis_client, redis_client, require_redis_url

__all__ = ["async_redis_client", "redis_client", "require_redis_url"]
