"""A cache store in Redis: the completion and analysis caches shared by every process.

Chosen by :func:`~multiagent.models.completion_cache.open_completion_cache` and
:func:`~multiagent.models.analysis_cache.open_analysis_cache` when ``MULTIAGENT_REDIS_URL`` is
set. It offers the interface of the embedded :class:`~multiagent.models._cache_store.CacheStore`
(``get_and_count``, ``set``, ``delete``, ``count``, ``counters``, ``clear``, ``len``, ``close``)
with the same keys, so a cache behaves the same whichever store holds it.

A cache called ``NAME`` is, under ``multiagent:cache:{NAME}:`` (one hash tag, so a cluster keeps
a cache on one node):

- ``e:<key>``: an entry, with Redis's own expiry (the server's clock, never a process's);
- ``counters``: a hash of exact counters (hits, misses, ...).

A lookup and its count are one Lua script: the entry is read and the hit or miss is counted in
the same round trip, atomically, so the counters are exact and shared by every process on every
machine. Values are bytes: text is stored as UTF-8; anything else pickled, as diskcache does
(run the cache's Redis where only this project writes).

If Redis goes away mid-run, a lookup answers "missing" and a ``set`` is dropped (a cache may
forget; it must not fail the run); this is said once on stderr and counted
(``cache_redis_lost_total``). Such lookups are not in the shared counters.
"""

from __future__ import annotations

import functools
import pickle
import sys
import threading
from typing import Any

import redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from multiagent._metrics import get_metrics
from multiagent._redis import open_redis

PREFIX = "multiagent:cache:"
#: Seconds a command may wait for its reply before Redis counts as lost.
COMMAND_TIMEOUT_S = 2.0
_TEXT, _PICKLED = b"s", b"p"
_LOST = (RedisConnectionError, RedisTimeoutError, ConnectionError, TimeoutError)
_SCAN_BATCH = 1000

#: KEYS: entry, counters; ARGV: found, missing. Returns the entry or nil, counted either way.
_GET_AND_COUNT = """
local v = redis.call('GET', KEYS[1])
if v then redis.call('HINCRBY', KEYS[2], ARGV[1], 1)
else redis.call('HINCRBY', KEYS[2], ARGV[2], 1) end
return v
"""

#: KEYS: entry, counters; ARGV: found, missing, stale, ms. An entry whose remaining time to live
#: is at most ``ms`` is stale: deleted and counted as such. Returns {1, entry} when fresh,
#: {0} when missing, {2} when stale.
_GET_FRESH_AND_COUNT = """
local v = redis.call('GET', KEYS[1])
if not v then redis.call('HINCRBY', KEYS[2], ARGV[2], 1) return {0} end
local left = redis.call('PTTL', KEYS[1])
if left >= 0 and left <= tonumber(ARGV[4]) then
  redis.call('DEL', KEYS[1])
  redis.call('HINCRBY', KEYS[2], ARGV[3], 1)
  return {2}
end
redis.call('HINCRBY', KEYS[2], ARGV[1], 1)
return {1, v}
"""


def _encode(value: Any) -> bytes:
    if isinstance(value, str):
        return _TEXT + value.encode()
    return _PICKLED + pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)


def _decode(blob: bytes) -> Any:
    if blob[:1] == _TEXT:
        return blob[1:].decode()
    # written by this class only (see the module docstring)
    return pickle.loads(blob[1:])


@functools.cache
def cache_client(url: str) -> redis.Redis:
    """The process's cache connection to ``url`` (bytes replies; checked with a ping).

    Raises:
        ConfigError: The URL is malformed.
        UsageError: Nothing answers at the URL.
    """
    return open_redis(url, socket_timeout=COMMAND_TIMEOUT_S, decode_responses=False)


class RedisCacheStore:
    """Entries and exact counters of one cache in Redis (see the module docstring).

    Args:
        client: A client whose replies are bytes (see :func:`cache_client`).
        name: The cache's name (``completions``, ``analysis``).
    """

    def __init__(self, client: redis.Redis, *, name: str) -> None:
        self.client = client
        self.name = name
        self.prefix = f"{PREFIX}{{{name}}}:"
        self._counters = f"{self.prefix}counters"
        self._get = client.register_script(_GET_AND_COUNT)
        self._get_fresh = client.register_script(_GET_FRESH_AND_COUNT)
        self._lock = threading.Lock()
        self.lost = 0  # times Redis was lost
        self._degraded = False

    def _entry(self, key: str) -> str:
        return f"{self.prefix}e:{key}"

    def _lose(self, exc: BaseException) -> None:
        """Say once per outage that the cache is passing through."""
        with self._lock:
            if self._degraded:
                return
            self._degraded = True
            self.lost += 1
        get_metrics().inc("cache_redis_lost_total", labels={"cache": self.name})
        print(
            f"multiagent: Redis lost for the {self.name} cache ({' '.join(str(exc).split())}); "
            "lookups miss and nothing is stored until it returns",
            file=sys.stderr,
            flush=True,
        )

    def _back(self) -> None:
        if self._degraded:
            with self._lock:
                self._degraded = False

    def get_and_count(self, key: str, default: Any, *, found: str, missing: str) -> Any:
        """The value of ``key`` or ``default``, counting ``found`` or ``missing`` in the same
        atomic step."""
        try:
            blob = self._get(keys=[self._entry(key), self._counters], args=[found, missing])
        except _LOST as exc:
            self._lose(exc)
            return default
        self._back()
        return default if blob is None else _decode(blob)

    def get_fresh_and_count(
        self,
        key: str,
        default: Any,
        *,
        stale_s: float,
        found: str,
        missing: str,
        stale: str,
        prefix: str = "",
    ) -> tuple[str, Any]:
        """As :meth:`get_and_count`, but an entry with at most ``stale_s`` seconds left to live
        is deleted and counted ``stale`` (the analysis cache's expiry, on the server's clock).

        Returns:
            The outcome (``found``, ``missing`` or ``stale``, counted as ``prefix`` + outcome)
            and the value (``default`` unless found). With Redis lost: ``missing`` (not
            counted) and ``default``.
        """
        args: list[str | int] = [prefix + found, prefix + missing, prefix + stale]
        args.append(int(stale_s * 1000))
        try:
            reply = self._get_fresh(keys=[self._entry(key), self._counters], args=args)
        except _LOST as exc:
            self._lose(exc)
            return missing, default
        self._back()
        status = int(reply[0])
        if status == 1:
            return found, _decode(reply[1])
        return (stale if status == 2 else missing), default

    def set(self, key: str, value: Any, *, expire: float | None) -> None:
        """Store ``value`` under ``key``, expiring after ``expire`` seconds (``None``: never)."""
        px = None if expire is None else max(1, int(expire * 1000))
        try:
            self.client.set(self._entry(key), _encode(value), px=px)
        except _LOST as exc:
            self._lose(exc)

    def flush(self) -> None:
        """Nothing to do: every ``set`` is written before it returns."""

    def delete(self, key: str) -> None:
        """Remove ``key`` (no error when absent)."""
        self.client.delete(self._entry(key))

    def count(self, name: str, delta: int = 1) -> None:
        """Add ``delta`` to counter ``name``."""
        self.client.hincrby(self._counters, name, delta)

    def counters(self) -> dict[str, int]:
        """Every counter by name (every process's, all time since the last reset)."""
        raw = self.client.hgetall(self._counters)
        return {(k.decode() if isinstance(k, bytes) else str(k)): int(v) for k, v in raw.items()}

    def _keys(self) -> list[bytes]:
        return list(self.client.scan_iter(match=f"{self.prefix}e:*", count=_SCAN_BATCH))

    def __len__(self) -> int:
        """Entries stored (Redis drops expired ones itself)."""
        return len(self._keys())

    def clear(self, *, counters: bool = False) -> None:
        """Drop every entry (and reset the counters when ``counters``)."""
        keys = self._keys()
        for start in range(0, len(keys), _SCAN_BATCH):
            self.client.unlink(*keys[start : start + _SCAN_BATCH])
        if counters:
            self.client.delete(self._counters)

    def close(self) -> None:
        """Nothing to release: the connection is the process's (:func:`cache_client`)."""
