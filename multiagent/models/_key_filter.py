"""A shared, memory-mapped filter of the keys a cache may hold: a miss without reading SQLite.

On a fast model most lookups of a fresh run miss, and each miss read SQLite. The read is cheap
alone (a few µs) but Python's ``sqlite3`` releases the GIL around every statement: in
LangGraph's parallel nodes the reading thread hands the GIL to a sibling and waits to get it
back, and the context switches cost the process far more than the read itself (measured with
``bench overhead``: about 0.1 ms of CPU per miss in the full pipeline, against 5 µs alone).
A lookup first asks this filter; a key it has never seen cannot be stored, so the lookup is a
miss at once, without SQLite. Keys it has seen (or collisions) are read from SQLite as before.

It is a Bloom filter of :data:`SLOTS` one-byte cells in a file beside the database, mapped
``MAP_SHARED`` by every process using the cache. A byte per cell, not a bit: writing 1 into a
byte needs no read-modify-write, so two processes adding at once never lose each other's mark.
Every store adds a key *before* the entry can reach SQLite, and cells are never cleared, so a
stored entry is always found (deleted, expired or cleared entries only cost a read, as before).
The file is made once, from the keys already in the database, under a lock, and swapped in
whole; a process killed meanwhile leaves no half-made file behind.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import mmap
import os
import sqlite3
from collections.abc import Iterable
from pathlib import Path

from multiagent.persistence._files import TEMP_PREFIX

#: Cells of the filter (one byte each; a sparse file, pages appear as keys fill them).
SLOTS = 1 << 22
#: Cells marked per key: with a million keys, about one miss in seven still reads SQLite.
PROBES = 4
_NAME = "keys.filter"


def _whole(path: Path) -> bool:
    """Whether the filter's file is there with every cell (a shorter one cannot be mapped)."""
    try:
        return path.stat().st_size == SLOTS
    except FileNotFoundError:
        return False


@functools.lru_cache(maxsize=64)
def _cells(key: str) -> tuple[int, ...]:
    """The key's cells; remembered a while, as a call's miss is followed by its store."""
    digest = hashlib.blake2b(key.encode(), digest_size=4 * PROBES).digest()
    return tuple(
        int.from_bytes(digest[i : i + 4], "little") & (SLOTS - 1) for i in range(0, 4 * PROBES, 4)
    )


class KeyFilter:
    """The key filter of the cache in ``directory``, made from ``existing`` keys if new.

    Args:
        directory: The cache directory (the filter's file lives there).
        existing: Reads the keys already stored; called once, when the filter is made.
    """

    def __init__(self, directory: Path, *, existing: Iterable[str] | None = None) -> None:
        path = Path(directory) / _NAME
        if not _whole(path):  # new, or cut short (a full disk, a hand): made again from SQLite
            self._make(path, existing or ())
        fd = os.open(path, os.O_RDWR)
        try:
            self._map = mmap.mmap(fd, SLOTS, flags=mmap.MAP_SHARED)
        finally:
            os.close(fd)  # the mapping keeps the file

    @staticmethod
    def _make(path: Path, keys: Iterable[str]) -> None:
        lock = os.open(path.with_suffix(".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if _whole(path):  # another process made it while this one waited
                return
            # named as every half-made file under the home, so `persistence repair` sees one
            # that a killed process left
            building = path.with_name(f"{TEMP_PREFIX}{path.name}.{os.getpid()}")
            fd = os.open(building, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.ftruncate(fd, SLOTS)
                with mmap.mmap(fd, SLOTS, flags=mmap.MAP_SHARED) as cells:
                    for key in keys:
                        for cell in _cells.__wrapped__(key):  # not kept: read once
                            cells[cell] = 1
            finally:
                os.close(fd)
            os.replace(building, path)
        finally:
            os.close(lock)

    def add(self, key: str) -> None:
        """Mark ``key`` (before its entry can be stored: see the module docstring)."""
        cells = self._map
        for cell in _cells(key):
            cells[cell] = 1

    def may_hold(self, key: str) -> bool:
        """False when ``key`` was never added: no process can have stored it."""
        cells = self._map
        return all(cells[cell] for cell in _cells(key))


def stored_keys(con: sqlite3.Connection) -> Iterable[str]:
    """The string keys in a diskcache database (what :class:`KeyFilter` is made from)."""
    try:
        rows = con.execute("SELECT key FROM Cache WHERE raw = 1").fetchall()
    except sqlite3.OperationalError:  # no table yet: nothing stored
        return []
    return [key for (key,) in rows if isinstance(key, str)]
