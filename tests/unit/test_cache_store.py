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
    assert handles == 2  # one for lookups, one writing answers behind; none per thread
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


_COUNTING_CHILD = """
import sys
from pathlib import Path
from multiagent.models._cache_store import CacheStore
store = CacheStore(Path(sys.argv[1]))
for _ in range(7):
    store.count("hits")
store.count("misses", 3)
print("counted", flush=True)
sys.stdin.read()
"""


def _killed_child_counts(directory: Path) -> None:
    """Run a process that counts 7 hits and 3 misses in ``directory``, then SIGKILL it."""
    import signal
    import subprocess

    child = subprocess.Popen(
        [sys.executable, "-c", _COUNTING_CHILD, str(directory)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "counted"
    os.kill(child.pid, signal.SIGKILL)
    child.communicate()


def test_a_killed_processs_slot_is_counted_live_and_folded_once(tmp_path: Path) -> None:
    directory = tmp_path / "s"
    store = CacheStore(directory)
    store.count("hits")
    _killed_child_counts(directory)
    slots = directory / "counters"
    assert len(list(slots.glob("*.slot"))) == 2  # this process's and the dead child's
    assert store.counters() == {"hits": 8, "misses": 3}
    again = CacheStore(directory)  # opening folds the dead child's slot into the table
    assert len(list(slots.glob("*.slot"))) == 1
    assert again.counters() == {"hits": 8, "misses": 3}
    assert store.counters() == {"hits": 8, "misses": 3}
    store.close()  # this process's own slot is folded on close
    again.close()
    assert list(slots.glob("*.slot")) == []
    assert CacheStore(directory).counters() == {"hits": 8, "misses": 3}


def test_a_fold_that_died_before_removing_the_file_counts_it_once(tmp_path: Path) -> None:
    directory = tmp_path / "s"
    _killed_child_counts(directory)
    store = CacheStore(directory)  # folds the child's slot
    assert store.counters() == {"hits": 7, "misses": 3}
    _killed_child_counts(directory)
    (dead,) = (directory / "counters").glob("*.slot")
    # the table is updated and the file marked folded, then the folder dies before unlinking
    store._fold_one(dead.name, {"hits": 7, "misses": 3})
    assert store.counters() == {"hits": 14, "misses": 6}
    store._fold()  # a later fold removes the marked file without adding it again
    assert not dead.exists()
    assert store.counters() == {"hits": 14, "misses": 6}


def test_a_reset_zeroes_counts_of_live_and_dead_processes(tmp_path: Path) -> None:
    directory = tmp_path / "s"
    store = CacheStore(directory)
    store.count("hits", 2)
    _killed_child_counts(directory)
    store.clear(counters=True)
    assert store.counters() == {"hits": 0, "misses": 0}
    store.count("hits")
    assert store.counters()["hits"] == 1
    store.close()
    assert CacheStore(directory).counters() == {"hits": 1, "misses": 0}


def test_entries_written_behind_are_seen_here_at_once_and_elsewhere_once_written(
    tmp_path: Path,
) -> None:
    writer = CacheStore(tmp_path / "s", write_behind_s=60.0)
    reader = diskcache.Cache(str(tmp_path / "s"))  # another connection, as another process
    writer.set("k", "v", expire=None)
    assert writer.get("k") == "v"
    assert writer.get_and_count("k", None, found="hits", missing="misses") == "v"
    assert reader.get("k") is None  # not written yet
    writer.flush()
    assert reader.get("k") == "v"
    assert writer.counters() == {"hits": 1}
    writer.set("gone", "v", expire=-1.0)  # expired before it was written: read as missing
    assert writer.get("gone") is None
    reader.close()


def test_the_writer_thread_writes_entries_behind_without_being_asked(tmp_path: Path) -> None:
    import time

    writer = CacheStore(tmp_path / "s", write_behind_s=0.01)
    reader = diskcache.Cache(str(tmp_path / "s"))
    writer.set("k", "v", expire=None)
    deadline = time.monotonic() + 30  # a wait for the writer thread, not a timing assertion
    while reader.get("k") is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert reader.get("k") == "v"
    assert writer._pending == {}
    reader.close()


def test_a_counter_a_slot_cannot_hold_is_committed_instead(tmp_path: Path) -> None:
    store = CacheStore(tmp_path / "s")
    long_name = "verdict-of-a-very-long-analysis-kind-name\x00" + "x" * 40
    store.count(long_name, 2)
    store.count("hits")
    assert store.counters() == {long_name: 2, "hits": 1}
