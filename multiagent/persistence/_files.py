"""File helpers the persistence modules share: atomic writes, directory sizes, a file lock."""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from multiagent._crash import crash_point
from multiagent._interrupt import check_stop
from multiagent.errors import MultiagentError

TEMP_PREFIX = ".tmp-"


def fsync_directory(directory: Path) -> None:
    """Make a rename or unlink in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a reader sees the old file or the new one, never half.

    The bytes go to a temporary file in the same directory, are flushed and fsynced, and only
    then renamed over ``path``; a crash at any point leaves the previous file intact.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=".part", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        crash_point("atomic-write")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)


def remove_stale_temporaries(directory: Path, *, older_than_s: float = 3600.0) -> int:
    """Delete temporary files a killed writer left behind; return how many were removed."""
    if not directory.is_dir():
        return 0
    removed = 0
    cutoff = time.time() - older_than_s
    for entry in directory.glob(f"{TEMP_PREFIX}*"):
        with contextlib.suppress(OSError):
            if entry.is_file() and entry.stat().st_mtime < cutoff:
                entry.unlink()
                removed += 1
    return removed


def tree_size(path: Path) -> int:
    """Total size in bytes of a file, or of every file under a directory (0 if missing)."""
    if path.is_file():
        return path.stat().st_size
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += (Path(root) / name).stat().st_size
    return total


class FileLock:
    """A shared/exclusive lock on a file (``flock``), between threads and processes alike.

    Writers take it shared, so they do not wait for each other; maintenance takes it exclusive,
    so it never runs beside a writer.
    """

    def __init__(self, path: Path, *, timeout_s: float = 120.0) -> None:
        self.path = path
        self.timeout_s = timeout_s

    @contextlib.contextmanager
    def shared(self) -> Iterator[None]:
        """Hold the lock shared for the ``with`` block."""
        with self._hold(fcntl.LOCK_SH):
            yield

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold the lock exclusively for the ``with`` block."""
        with self._hold(fcntl.LOCK_EX):
            yield

    @contextlib.contextmanager
    def _hold(self, mode: int) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:

            def take() -> bool:
                try:
                    fcntl.flock(fd, mode | fcntl.LOCK_NB)
                except BlockingIOError:
                    return False
                return True

            exclusive = mode == fcntl.LOCK_EX
            wait_for_lock(take, name=str(self.path), exclusive=exclusive, timeout_s=self.timeout_s)
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)


def wait_for_lock(
    take: Callable[[], bool], *, name: str, exclusive: bool, timeout_s: float
) -> None:
    """Call ``take`` (one try at a lock, ``True`` once held) until it holds the lock.

    A lock of this machine (``flock``) and one of a database server wait alike: polled, so a
    wait ends at Ctrl-C under ``stop_on_ctrl_c``, nothing touched yet, and no wait outlasts
    ``timeout_s``.

    Raises:
        MultiagentError: Not held after ``timeout_s`` seconds, naming the lock.
    """
    deadline = time.monotonic() + timeout_s
    while not take():
        if time.monotonic() >= deadline:
            kind = "exclusive" if exclusive else "shared"
            raise MultiagentError(
                f"timed out after {timeout_s:g}s waiting for the {kind} lock {name}; "
                "another maintenance task or writer holds it"
            )
        # Ctrl-C (under stop_on_ctrl_c) ends the wait, nothing touched yet: maintenance waiting
        # for writers, or a run waiting for maintenance (a compaction may hold it for minutes)
        check_stop()
        time.sleep(0.05)
