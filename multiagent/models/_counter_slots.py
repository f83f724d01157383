"""Exact counters without a commit per event: one memory-mapped slot file per process.

A cache lookup must be counted before it returns, and the count must survive the process being
killed (``SIGKILL`` included). Committing each count to SQLite keeps that promise at the price
of a write transaction per lookup. Here each process counts in its own small file mapped
``MAP_SHARED``: an increment is a store into the page cache, which the kernel keeps (and writes
back) whether or not the process lives on, so nothing is lost when it dies. Only a power cut
can lose counts, as with SQLite's ``synchronous=NORMAL`` before.

A slot file is ``<random id>.slot`` in the counters directory: :data:`ENTRIES` entries of a
name (UTF-8, NUL-padded) and a signed 64-bit value. Its owner holds an exclusive ``flock`` on it
while it lives, so anyone who can take that lock knows the owner is dead. Totals are the
folded totals (kept by the caller, e.g. a SQLite table) plus every unfolded slot file, live or
dead. :meth:`SlotCounters.fold` moves dead files into the folded totals: the caller adds the
values and marks the file's name as folded *in one transaction*, then the file is removed, so a
crash between the two never counts a file twice (a marked file is removed, not added again).
Readers and folders hold a directory lock so a reader never sees a file both folded and not.

A forked child never writes into its parent's slot: it opens its own on its first count.
"""

from __future__ import annotations

import fcntl
import mmap
import os
import struct
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

#: Counter names a process can use (entries of its slot file).
ENTRIES = 64
_NAME_BYTES = 56
_ENTRY = _NAME_BYTES + 8
_SIZE = ENTRIES * _ENTRY
_SUFFIX = ".slot"

#: Called by :meth:`SlotCounters.fold` with a dead file's name and counts; it adds them to the
#: folded totals and marks the name folded in one transaction, unless the name is marked already.
FoldFn = Callable[[str, dict[str, int]], None]


def _read(path: Path) -> dict[str, int]:
    """The counts in a slot file (a missing or short file reads as what it holds)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return {}
    counts: dict[str, int] = {}
    for offset in range(0, len(data) - _ENTRY + 1, _ENTRY):
        raw = data[offset : offset + _NAME_BYTES].rstrip(b"\0")
        if not raw:
            break
        value = struct.unpack_from("<q", data, offset + _NAME_BYTES)[0]
        name = raw.decode("utf-8", "replace")
        counts[name] = counts.get(name, 0) + value
    return counts


def owner_dead(path: Path) -> bool:
    """Whether no process holds ``path``'s ``flock`` (its owner died or closed it).

    An owner takes ``LOCK_EX`` on its file for as long as it lives; the kernel drops the lock
    when the process dies, however it dies, and a reused pid cannot inherit it. A missing file
    reads as not dead (its owner removed it after handing over what it held).
    """
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)
    return True


def _files(directory: Path) -> list[Path]:
    return sorted(directory.glob(f"*{_SUFFIX}"))


def _unfolded(directory: Path, done: set[str]) -> dict[str, int]:
    """The counts of the slot files in ``directory`` whose names are not in ``done``."""
    totals: dict[str, int] = {}
    for path in _files(directory):
        if path.name in done:
            continue
        for name, value in _read(path).items():
            totals[name] = totals.get(name, 0) + value
    return totals


def read_totals(
    directory: Path, folded: Callable[[], tuple[dict[str, int], set[str]]]
) -> dict[str, int]:
    """:meth:`SlotCounters.totals` for a process that may not write ``directory``: it creates
    nothing (no slot of its own, no lock file). The directory lock is still taken, on the lock
    file opened read-only (``flock`` needs no write access), so a folder elsewhere is waited
    for; without a lock file nothing has folded yet, and a fold is not waited for.
    """
    try:
        fd = os.open(directory / ".lock", os.O_RDONLY)
    except FileNotFoundError:
        fd = -1
    try:
        if fd >= 0:
            fcntl.flock(fd, fcntl.LOCK_SH)
        totals, done = folded()
        for name, value in _unfolded(directory, done).items():
            totals[name] = totals.get(name, 0) + value
        return totals
    finally:
        if fd >= 0:
            os.close(fd)


class SlotCounters:
    """This process's slot file in ``directory``, and the totals of every process's.

    Args:
        directory: Where the slot files live (created when missing).
    """

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._pid: int | None = None
        self._fd = -1
        self._map: mmap.mmap | None = None
        self._values: memoryview | None = None
        self._index: dict[str, int] = {}
        self.name = ""

    def _open(self) -> memoryview:
        """Create and lock this process's slot file (the lock lives as long as the process)."""
        self._drop()
        self.name = f"{uuid.uuid4().hex}{_SUFFIX}"
        fd = os.open(self.directory / self.name, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, _SIZE)
        self._fd, self._pid = fd, os.getpid()
        self._map = mmap.mmap(fd, _SIZE, flags=mmap.MAP_SHARED)
        self._values = memoryview(self._map).cast("q")
        self._index = {}
        return self._values

    def _drop(self) -> None:
        """Let go of the current mapping and descriptor (a fork's inherited copies included)."""
        if self._values is not None:
            self._values.release()
        if self._map is not None:
            self._map.close()
        if self._fd >= 0:
            os.close(self._fd)  # a child's copy: the parent's lock stays with the parent's
        self._values, self._map, self._fd = None, None, -1

    def add(self, name: str, delta: int = 1) -> None:
        """Add ``delta`` to counter ``name``; in the page cache (crash-proof) when this returns.

        Raises:
            ValueError: A new name when all :data:`ENTRIES` are taken, or one too long.
        """
        with self._lock:
            values = self._values
            if values is None or self._pid != os.getpid():
                values = self._open()
            index = self._index.get(name)
            if index is None:
                index = self._claim(name)
            values[index] += delta

    def _claim(self, name: str) -> int:
        """The value index of a new counter name (its name written first)."""
        raw = name.encode()
        if len(raw) > _NAME_BYTES or len(self._index) >= ENTRIES:
            raise ValueError(f"counter name {name!r}: too long or no free entry")
        entry = len(self._index)
        assert self._map is not None
        self._map[entry * _ENTRY : entry * _ENTRY + len(raw)] = raw
        index = self._index[name] = (entry * _ENTRY + _NAME_BYTES) // 8
        return index

    @contextmanager
    def _directory_locked(self) -> Iterator[None]:
        fd = os.open(self.directory / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _files(self) -> list[Path]:
        return _files(self.directory)

    def totals(self, folded: Callable[[], tuple[dict[str, int], set[str]]]) -> dict[str, int]:
        """Every counter's total: ``folded()`` gives the folded totals and the folded files'
        names; the counts of every other slot file are added to them."""
        with self._directory_locked():
            totals, done = folded()
            for name, value in _unfolded(self.directory, done).items():
                totals[name] = totals.get(name, 0) + value
        return totals

    def fold(self, into: FoldFn) -> int:
        """Fold the files of dead processes with ``into``, then remove them; return how many."""
        folded = 0
        with self._directory_locked():
            for path in self._files():
                if path.name == self.name and self._pid == os.getpid():
                    continue
                if not self._dead(path):
                    continue
                into(path.name, _read(path))
                path.unlink(missing_ok=True)
                folded += 1
        return folded

    @staticmethod
    def _dead(path: Path) -> bool:
        return owner_dead(path)

    def reset(
        self,
        folded: Callable[[], tuple[dict[str, int], set[str]]],
        offset: Callable[[dict[str, int]], None],
    ) -> None:
        """Reset every total to 0: ``offset`` replaces the folded totals with minus the
        unfolded counts (live processes go on counting in their files, from 0 from here)."""
        with self._directory_locked():
            _, done = folded()
            totals = _unfolded(self.directory, done)
            offset({name: -value for name, value in totals.items()})

    def close(self) -> None:
        """Give up this process's slot (its counts stay in the file until it is folded)."""
        with self._lock:
            self._drop()
            self._pid = None
