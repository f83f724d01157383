"""The analysis cache: derived results (a validator's verdict on identical content) with a TTL.

``get_or_compute(kind, content, compute)`` returns the stored result for (kind, content) while it
is younger than the TTL, else computes, stores and returns it. Three counters per kind, kept like
the completion cache's (:class:`~multiagent.models._cache_store.CacheStore`: one connection per
process, each count committed before the lookup returns, so exact after a crash and shared across
processes): ``hits``, ``misses`` (never stored) and ``expired`` (stored but older than the TTL;
recomputed). Values are pickled by diskcache, so they must be picklable (pydantic models and
plain data are).

With ``MULTIAGENT_REDIS_URL`` set the cache lives in Redis
(:class:`~multiagent.models._cache_redis.RedisCacheStore`), shared by every process: entries are
kept for twice the TTL and an entry with less than the TTL left to live (older than the TTL) is
stale, judged on the server's clock; the lookup and its count are one atomic step.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from multiagent._metrics import get_metrics
from multiagent.models._cache_counters import read_stored
from multiagent.models._cache_store import CacheStore

if TYPE_CHECKING:  # redis is imported only when a cache lives there (see open_*)
    from multiagent.models._cache_redis import RedisCacheStore

T = TypeVar("T")
_OUTCOMES = ("hits", "misses", "expired")
_MISSING = object()


def analysis_cache_dir(home: Path) -> Path:
    """Where the analysis cache of a data directory lives."""
    return home / "cache" / "analysis"


def content_key(kind: str, content: Any) -> str:
    """The SHA-256 key of ``content`` (text, or JSON-able data) for analyses of ``kind``."""
    text = content if isinstance(content, str) else json.dumps(content, sort_keys=True, default=str)
    return hashlib.sha256(f"{kind}\x00{text}".encode()).hexdigest()


class AnalysisCache:
    """TTL cache of derived results with hit/miss/expired counters per kind.

    Args:
        directory: Where to keep it (see :func:`analysis_cache_dir`).
        ttl_s: Age after which an entry is stale.
        enabled: When false, every call computes and nothing is stored or counted.
        clock: Wall-clock seconds (entries outlive processes, so not a monotonic clock);
            a Redis ``store`` uses the server's clock instead.
        store: Keep entries and counters in this Redis store instead of ``directory``.
    """

    def __init__(
        self,
        directory: Path,
        *,
        ttl_s: float,
        enabled: bool = True,
        clock: Callable[[], float] = time.time,
        store: RedisCacheStore | None = None,
    ) -> None:
        if ttl_s <= 0:
            raise ValueError(f"ttl_s must be positive, got {ttl_s}")
        self.directory = Path(directory)
        self.ttl_s = ttl_s
        self.enabled = enabled
        self._clock = clock
        self._store: CacheStore | RedisCacheStore | None = None
        if enabled:
            self._store = (
                store
                if store is not None
                else CacheStore(
                    self.directory / "entries", legacy_counters=self.directory / "stats"
                )
            )

    def _count(self, kind: str, outcome: str) -> None:
        assert self._store is not None
        self._store.count(f"{kind}\x00{outcome}")
        get_metrics().inc(f"analysis_cache_{outcome}_total", labels={"kind": kind})

    def lookup(self, kind: str, content: Any) -> Any:
        """The fresh stored result, or :data:`MISSING`; counts a hit, miss or expiry."""
        if self._store is None:
            return _MISSING
        key = content_key(kind, content)
        if not isinstance(self._store, CacheStore):  # the Redis store counts in one round trip
            outcome, stored = self._store.get_fresh_and_count(
                key, _MISSING, stale_s=self.ttl_s, found="hits", missing="misses",
                stale="expired", prefix=f"{kind}\x00",
            )  # fmt: skip
            get_metrics().inc(f"analysis_cache_{outcome}_total", labels={"kind": kind})
            return stored if stored is _MISSING else stored[1]
        with self._store.locked() as cache:
            stored = cache.get(key, default=_MISSING, retry=True)
            if stored is _MISSING:
                outcome, value = "misses", _MISSING
            elif self._clock() - stored[0] > self.ttl_s:
                cache.delete(key, retry=True)
                outcome, value = "expired", _MISSING
            else:
                outcome, value = "hits", stored[1]
        self._count(kind, outcome)
        return value

    def store(self, kind: str, content: Any, value: Any) -> None:
        """Keep ``value`` as the result for (kind, content)."""
        if self._store is None:
            return
        key = content_key(kind, content)
        # diskcache's own expiry only culls: freshness is judged by the stored time
        self._store.set(key, (self._clock(), value), expire=self.ttl_s * 2)

    def get_or_compute(self, kind: str, content: Any, compute: Callable[[], T]) -> T:
        """Return the cached result for (kind, content), computing and storing it when needed."""
        found = self.lookup(kind, content)
        if found is not _MISSING:
            return found  # type: ignore[no-any-return]
        value = compute()
        self.store(kind, content, value)
        return value

    async def aget_or_compute(
        self, kind: str, content: Any, compute: Callable[[], Awaitable[T]]
    ) -> T:
        """Async :meth:`get_or_compute`; ``compute`` returns an awaitable."""
        found = self.lookup(kind, content)
        if found is not _MISSING:
            return found  # type: ignore[no-any-return]
        value = await compute()
        self.store(kind, content, value)
        return value

    def stats(self) -> dict[str, Any]:
        """Counters per kind and in total: ``{"kinds": {kind: {...}}, "total": {...}}``."""
        counters = self._store.counters() if self._store is not None else {}
        entries = len(self._store) if self._store is not None else 0
        return {"enabled": self.enabled, "ttl_s": self.ttl_s, **_stats(counters, entries)}

    def __len__(self) -> int:
        """The entries kept (none when the cache is switched off)."""
        return len(self._store) if self._store is not None else 0

    def clear(self, *, counters: bool = False) -> None:
        """Drop every entry (and the counters when ``counters``)."""
        if self._store is not None:
            self._store.clear(counters=counters)

    def close(self) -> None:
        """Close the underlying SQLite connection."""
        if self._store is not None:
            self._store.close()


def _stats(counters: dict[str, int], entries: int) -> dict[str, Any]:
    """Entries, and the counters per kind and in total."""
    kinds: dict[str, dict[str, int]] = {}
    for key, value in counters.items():
        kind, _, outcome = key.partition("\x00")
        kinds.setdefault(kind, dict.fromkeys(_OUTCOMES, 0))[outcome] = value
    total = {o: sum(k[o] for k in kinds.values()) for o in _OUTCOMES}
    return {"entries": entries, "kinds": dict(sorted(kinds.items())), "total": total}


def stored_analysis_stats(home: Path) -> dict[str, Any]:
    """The analysis cache's entries and counters (per kind and in total) as stored in data
    directory ``home``, read without opening the cache: for a process that may not write there
    (see :func:`~multiagent.models._cache_counters.read_stored`)."""
    return _stats(*read_stored(analysis_cache_dir(Path(home)) / "entries"))


MISSING: Any = _MISSING

_OPEN: dict[tuple[Path, float, bool], AnalysisCache] = {}
_OPEN_LOCK = threading.Lock()
_BY_HOME: dict[tuple[Path, float, bool], AnalysisCache] = {}
_BY_REDIS: dict[tuple[str, float, bool], AnalysisCache] = {}


def open_analysis_cache(
    home: Path, *, ttl_s: float, enabled: bool = True, redis_url: str | None = None
) -> AnalysisCache:
    """The process's analysis cache for data directory ``home`` (opened once).

    Args:
        home: The data directory (where the embedded cache lives).
        ttl_s: Age after which an entry is stale.
        enabled: When false, every call computes and nothing is stored or counted.
        redis_url: Keep the cache in this Redis, shared by every process, instead of ``home``.

    Raises:
        UsageError: ``redis_url`` is given, the cache is enabled and nothing answers there.
    """
    if redis_url and enabled:
        with _OPEN_LOCK:
            cache = _BY_REDIS.get((redis_url, ttl_s, enabled))
            if cache is None:
                from multiagent.models._cache_redis import RedisCacheStore, cache_client

                store = RedisCacheStore(cache_client(redis_url), name="analysis")
                directory = analysis_cache_dir(Path(home))
                cache = AnalysisCache(directory, ttl_s=ttl_s, enabled=enabled, store=store)
                _BY_REDIS[(redis_url, ttl_s, enabled)] = cache
            return cache
    # an absolute home is looked up as given (resolving costs a system call per component)
    given = (Path(home), ttl_s, enabled)
    found = _BY_HOME.get(given) if given[0].is_absolute() else None
    if found is not None:
        return found
    directory = analysis_cache_dir(Path(home)).resolve()
    with _OPEN_LOCK:
        cache = _OPEN.get((directory, ttl_s, enabled))
        if cache is None:
            cache = AnalysisCache(directory, ttl_s=ttl_s, enabled=enabled)
            _OPEN[(directory, ttl_s, enabled)] = cache
        if given[0].is_absolute():
            _BY_HOME[given] = cache
        return cache
