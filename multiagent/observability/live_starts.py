"""A run starting on a thread and prune cutting that thread, serialised by one lock.

Prune reads which threads other processes run, then trims or deletes the rest. A run that
started in between would have its thread's history cut under it: its ``runs`` row is queued,
committed up to 0.2 s later, and written only once its graph starts, long after it read its
thread. So a run with a checkpointer registers before it reads its thread: a row in ``starts``,
committed at once while it holds ``<home>/runs.lock`` shared (runs do not wait for each other),
and deleted when the run returns. Prune holds the lock exclusively around each check-and-cut
and reads the live file again under it: a run registered before is seen and its thread left
whole; one registering meanwhile waits for the cut, then reads the thread as prune left it (a
resume of a deleted thread is refused as unknown).

The lock is an ``flock``, which the kernel drops with its process: a holder killed mid-way
blocks no one, and a killed run's ``starts`` row names a pid that is gone (or reused since),
which :func:`~multiagent.observability.live.running_elsewhere` does not count. The registry is
the data directory's, whatever the checkpointer: processes that share a PostgreSQL checkpointer
but not a data directory do not see each other's runs.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from multiagent.observability.live import live_writer, running_elsewhere
from multiagent.persistence._files import FileLock

#: The lock beside the live runs file.
LOCK_FILE = "runs.lock"


def _lock(home: Path) -> FileLock:
    return FileLock(Path(home) / LOCK_FILE)


@contextmanager
def registered_run(home: Path, thread_id: str) -> Iterator[None]:
    """List a run on ``thread_id`` as running for the ``with`` block, from its first line.

    Args:
        home: The data directory (its ``runs.sqlite`` and ``runs.lock``).
        thread_id: The thread the run is about to read and write.
    """
    writer = live_writer(home)  # its connection, opened once per process
    with _lock(home).shared():
        row = writer.commit_now(
            "INSERT INTO starts (thread_id, pid, at) VALUES (?, ?, ?)",
            (thread_id, os.getpid(), time.time()),
        )
    try:
        yield
    finally:
        # left behind (a busy file), the row names this pid, counted only while it lives
        with suppress(sqlite3.Error):
            writer.commit_now("DELETE FROM starts WHERE id = ?", (row,))


@contextmanager
def runs_held(home: Path) -> Iterator[dict[str, int]]:
    """No run starts while the ``with`` block runs; it gets the threads other processes run.

    Args:
        home: The data directory.

    Yields:
        :func:`~multiagent.observability.live.running_elsewhere`, read under the lock.
    """
    with _lock(home).exclusive():
        yield running_elsewhere(home)


__all__ = ["LOCK_FILE", "registered_run", "runs_held"]
