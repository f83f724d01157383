"""Cache analytics: the completion and analysis caches as every process sees them.

Both caches keep exact hit/miss counters beside their diskcache entries, in the same SQLite
database under ``MULTIAGENT_HOME`` (see
:mod:`multiagent.models.completion_cache` and :mod:`multiagent.models.analysis_cache`), so a
metrics server in another process reads the same numbers the runs wrote. A cache that was never
created is reported empty (``present: false``) and is not created by reading it. A cache this
process may not write (a dashboard given the data directory read-only) is read from its files
as they are, without opening it: nothing is created and nothing is folded.

With ``MULTIAGENT_REDIS_URL`` set both caches live in Redis and the counters reported are the
shared ones, every process's on every machine (``store: "redis"``; Redis drops expired entries
itself, so ``expired_entries`` is 0, and ``size_bytes`` is not measured there: 0).
"""

from __future__ import annotations

import os
import sqlite3
import time
from contextlib import closing
from pathlib import Path
from typing import Any

from multiagent._metrics import Series
from multiagent.models.analysis_cache import (
    analysis_cache_dir,
    open_analysis_cache,
    stored_analysis_stats,
)
from multiagent.models.completion_cache import (
    completion_cache_dir,
    open_completion_cache,
    stored_completion_stats,
)
from multiagent.persistence.health import read_only_uri
from multiagent.policies import Settings

_DISKCACHE_DB = "cache.db"  # diskcache.core.DBNAME


def size_on_disk(directory: Path) -> int:
    """Bytes of every file under ``directory`` (0 when it does not exist)."""
    if not directory.exists():
        return 0
    return sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())


def expired_entries(entries_dir: Path, *, now: float | None = None) -> int:
    """Entries past their expiry that diskcache has not culled yet (they read as misses)."""
    database = entries_dir / _DISKCACHE_DB
    if not database.exists():
        return 0
    moment = time.time() if now is None else now
    uri = read_only_uri(database.resolve())  # creates nothing: a home may be read-only
    with closing(sqlite3.connect(uri, uri=True, timeout=10.0)) as conn:
        row = conn.execute(
            "SELECT COUNT(*) FROM Cache WHERE expire_time IS NOT NULL AND expire_time < ?",
            (moment,),
        ).fetchone()
    return int(row[0])


def _writable(directory: Path) -> bool:
    """Whether this process may open the cache in ``directory`` (which opening writes to)."""
    entries = directory / "entries"
    return os.access(entries if entries.exists() else directory, os.W_OK | os.X_OK)


def _completion(settings: Settings) -> dict[str, Any]:
    config = settings.profile.cache
    directory = completion_cache_dir(Path(settings.home))
    base: dict[str, Any] = {
        "enabled": config.completion_enabled,
        "ttl_s": config.completion_ttl_s,
        "present": directory.exists(),
        "store": "redis" if settings.redis_url else "disk",
    }
    if settings.redis_url:
        shared = open_completion_cache(
            settings.home, ttl_s=config.completion_ttl_s, redis_url=settings.redis_url
        ).stats()
        return {**base, **shared.as_dict(), "present": True, "expired_entries": 0,
                "size_bytes": 0}  # fmt: skip
    if not directory.exists():
        zeros = {"hits": 0, "misses": 0, "lookups": 0, "hit_rate": 0.0, "entries": 0}
        return {**base, **zeros, "expired_entries": 0, "size_bytes": 0}
    stats = (
        open_completion_cache(settings.home, ttl_s=config.completion_ttl_s).stats()
        if _writable(directory)
        else stored_completion_stats(settings.home)
    )
    return {
        **base,
        **stats.as_dict(),
        "expired_entries": expired_entries(directory / "entries"),
        "size_bytes": size_on_disk(directory),
    }


def _analysis(settings: Settings) -> dict[str, Any]:
    config = settings.profile.cache
    directory = analysis_cache_dir(Path(settings.home))
    base: dict[str, Any] = {
        "enabled": config.analysis_enabled,
        "ttl_s": config.analysis_ttl_s,
        "present": directory.exists() or bool(settings.redis_url),
        "store": "redis" if settings.redis_url else "disk",
    }
    if not base["present"]:
        zeros = {"hits": 0, "misses": 0, "expired": 0, "lookups": 0, "hit_rate": 0.0}
        return {**base, **zeros, "entries": 0, "size_bytes": 0, "kinds": {}}
    if settings.redis_url or _writable(directory):
        # opened enabled whatever the profile says: a switched-off cache may still hold counts
        stats = open_analysis_cache(
            settings.home, ttl_s=config.analysis_ttl_s, redis_url=settings.redis_url
        ).stats()
    else:
        stats = stored_analysis_stats(settings.home)
    kinds = {kind: _rates(counts) for kind, counts in stats["kinds"].items()}
    return {
        **base,
        **_rates(stats["total"]),
        "entries": stats["entries"],
        "size_bytes": 0 if settings.redis_url else size_on_disk(directory),
        "kinds": kinds,
    }


def _rates(counts: dict[str, int]) -> dict[str, Any]:
    """Hits, misses and expired lookups with their sum and the hit rate."""
    lookups = counts["hits"] + counts["misses"] + counts["expired"]
    return {
        "hits": counts["hits"],
        "misses": counts["misses"],
        "expired": counts["expired"],
        "lookups": lookups,
        "hit_rate": round(counts["hits"] / lookups, 6) if lookups else 0.0,
    }


def cache_analytics(settings: Settings) -> dict[str, Any]:
    """Counters, hit rates, entries and size of the completion and analysis caches.

    Args:
        settings: Resolved settings (data directory, ``profile.cache``).

    Returns:
        ``{"completion": {...}, "analysis": {...}}``: hits, misses, lookups, hit_rate, entries,
        size_bytes, enabled, ttl_s and present for both; ``expired_entries`` (stored past their
        TTL, not yet culled) for completions; ``expired`` lookups and per-``kinds`` counters for
        analyses.
    """
    return {"completion": _completion(settings), "analysis": _analysis(settings)}


def shared_cache_summary(settings: Settings) -> dict[str, Any] | None:
    """The caches' figures for ``metrics show`` from the shared counters in Redis (every
    process's, on every machine); ``None`` without ``MULTIAGENT_REDIS_URL``.

    Raises:
        UsageError: Redis is configured but does not answer (one line naming the URL).
    """
    if not settings.redis_url:
        return None
    analytics = cache_analytics(settings)
    keep = {"completion": ("hits", "misses"), "analysis": ("hits", "misses", "expired")}
    return {
        cache: {**{k: analytics[cache][k] for k in names}, "hit_rate": analytics[cache]["hit_rate"],
                "entries": analytics[cache]["entries"], "store": "redis"}
        for cache, names in keep.items()
    }  # fmt: skip


def cache_gauges(analytics: dict[str, Any]) -> list[Series]:
    """The entries and size of each cache as gauge series for ``/metrics``."""
    out: list[Series] = []
    for cache in ("completion", "analysis"):
        labels = {"cache": cache}
        out.append(Series("multiagent_cache_entries", labels, float(analytics[cache]["entries"])))
        out.append(
            Series("multiagent_cache_size_bytes", labels, float(analytics[cache]["size_bytes"]))
        )
    return out
