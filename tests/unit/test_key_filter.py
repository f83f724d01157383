"""The key filter: a miss of a key no process stored skips SQLite; stored keys are always found."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from multiagent.models import _key_filter
from multiagent.models._cache_store import CacheStore
from multiagent.models._key_filter import KeyFilter

_STORING_CHILD = """
import sys
from pathlib import Path
from multiagent.models._cache_store import CacheStore
store = CacheStore(Path(sys.argv[1]), key_filter=True)
store.set("from-child", "v", expire=None)
print("stored", flush=True)
sys.stdin.read()
"""


def _statements(store: CacheStore) -> list[str]:
    """The SQL statements run on ``store``'s connection from here on."""
    seen: list[str] = []
    with store.locked() as cache:
        cache._con.set_trace_callback(seen.append)
    return seen


def test_a_key_never_stored_misses_without_reading_sqlite(tmp_path: Path) -> None:
    store = CacheStore(tmp_path / "s", key_filter=True)
    store.set("stored", "v", expire=None)
    seen = _statements(store)
    assert store.get_and_count("unknown", None, found="hits", missing="misses") is None
    assert seen == []
    assert store.get("stored") == "v"
    assert any("SELECT" in statement for statement in seen)
    assert store.counters() == {"misses": 1}


def test_a_key_another_process_stored_is_found_after_it_is_killed(tmp_path: Path) -> None:
    directory = tmp_path / "s"
    store = CacheStore(directory, key_filter=True)
    assert store.get("from-child") is None
    child = subprocess.Popen(
        [sys.executable, "-c", _STORING_CHILD, str(directory)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "stored"
    os.kill(child.pid, signal.SIGKILL)
    child.communicate()
    assert store.get("from-child") == "v"


def test_entries_stored_before_the_filter_existed_are_found(tmp_path: Path) -> None:
    directory = tmp_path / "s"
    old = CacheStore(directory)  # as an earlier version stored them: no filter
    for n in range(20):
        old.set(f"old-{n}", n, expire=None)
    old.close()
    assert not (directory / "keys.filter").exists()
    store = CacheStore(directory, key_filter=True)
    assert [store.get(f"old-{n}") for n in range(20)] == list(range(20))
    assert not KeyFilter(directory).may_hold("never-stored")


def test_a_filter_file_cut_short_is_made_again_from_what_is_stored(tmp_path: Path) -> None:
    directory = tmp_path / "s"
    store = CacheStore(directory, key_filter=True)
    store.set("kept", "v", expire=None)
    store.close()
    with (directory / "keys.filter").open("r+b") as cut:
        cut.truncate(1024)
    again = CacheStore(directory, key_filter=True)
    assert again.get("kept") == "v"
    assert KeyFilter(directory).may_hold("kept")


def test_a_miss_and_the_store_that_follows_hash_the_key_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = CacheStore(tmp_path / "s", key_filter=True)
    hashed: list[bytes] = []
    real = _key_filter.hashlib.blake2b

    def counted(data: bytes, **kwargs: Any) -> Any:
        hashed.append(data)
        return real(data, **kwargs)

    monkeypatch.setattr(_key_filter.hashlib, "blake2b", counted)
    _key_filter._cells.cache_clear()
    assert store.get("fresh key") is None
    store.set("fresh key", "v", expire=None)
    assert store.get("fresh key") == "v"
    assert hashed == [b"fresh key"]
