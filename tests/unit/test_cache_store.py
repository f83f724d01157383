"""The caches' store: one SQLite connection per process, counters beside the entries, culling."""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

import diskcache
import pytest
from langchain_core.load import dumps
from langchain_core.messages import HumanMessage

from multiagent.models._cache_store import CULL_EVERY, CacheStore
from multiagent.models.analysis_cache import AnalysisCache
from multiagent.models.completion_cache import CompletionCache
from multiagent.observability.cache_stats import expired_entries


def _open_handles(database: Path) -> int:
    """File descriptors of this process open on ``database`` (not its -wal or -shm files)."""
    fds = Path("/proc/self/fd")
    count = 0
    for fd in fds.iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        count += target == str(database)
    return count


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/fd")
def test_threads_share_one_connection(tmp_path: Path) -> None:
    cache = CompletionCache(tmp_path / "c")
    database = (tmp_path / "c" / "entries" / "cache.db").resolve()
    threads = 8
    # every thread looks up, then all wait together so none has ended (and dropped a
    # per-thread connection) when the handles are counted
    barrier = threading.Barrier(threads + 1)
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            cache.lookup(dumps([HumanMessage(f"prompt {n}")]), "m")
        except BaseException as exc:
            errors.append(exc)
        barrier.wait()
        barrier.wait()

    workers = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    barrier.wait()
    handles = _open_handles(database)
    barrier.wait()
    for worker in workers:
        worker.join()
    assert errors == []
    assert handles == 1
    assert cache.stats().misses == threads


def test_counters_of_an_earlier_version_are_carried_over_once(tmp_path: Path) -> None:
    legacy = diskcache.Cache(str(tmp_path / "c" / "stats"))
    legacy.incr("hits", 3)
    legacy.incr("misses", 4)
    legacy.close()
    first = CompletionCache(tmp_path / "c")
    assert (first.stats().hits, first.stats().misses) == (3, 4)
    first.lookup(dumps([HumanMessage("new")]), "m")
    first.close()
    second = CompletionCache(tmp_path / "c")  # not added a second time
    assert (second.stats().hits, second.stats().misses) == (3, 5)


def test_analysis_counters_per_kind_and_reset(tmp_path: Path) -> None:
    cache = AnalysisCache(tmp_path / "a", ttl_s=60)
    assert cache.get_or_compute("verdict", "x", lambda: 1) == 1
    assert cache.get_or_compute("verdict", "x", lambda: 2) == 1
    assert cache.get_or_compute("score", "x", lambda: 3) == 3
    stats = cache.stats()
    assert stats["kinds"]["verdict"] == {"hits": 1, "misses": 1, "expired": 0}
    assert stats["kinds"]["score"] == {"hits": 0, "misses": 1, "expired": 0}
    assert stats["entries"] == 2
    cache.clear(counters=True)
    assert cache.stats()["total"] == {"hits": 0, "misses": 0, "expired": 0}


def test_expired_entries_are_culled_every_cull_every_writes(tmp_path: Path) -> None:
    store = CacheStore(tmp_path / "s")
    for i in range(5):
        store.set(f"old {i}", "x", expire=-1.0)  # already past its expiry
    assert expired_entries(tmp_path / "s") == 5
    assert store.get("old 0") is None  # expired entries read as missing before the cull
    for i in range(CULL_EVERY - 6):
        store.set(f"new {i}", "y", expire=None)
    assert expired_entries(tmp_path / "s") == 5  # no cull on an ordinary write
    store.set("last", "y", expire=None)  # the CULL_EVERY-th write of this process
    assert expired_entries(tmp_path / "s") == 0
    assert len(store) == CULL_EVERY - 5
