"""A run starting on a thread and prune cutting that thread, serialised by one gate.

Prune reads which threads other processes run, then trims or deletes the rest. A run that
started in between would have its thread's history cut under it: its ``runs`` row is queued,
committed up to 0.2 s later, and written only once its graph starts, long after it read its
thread. So a run with a checkpointer registers before it reads its thread, holding the gate
shared (runs do not wait for each other), and unregisters when it returns. Prune holds the gate
exclusively around each check-and-cut and reads the registry again under it: a run registered
before is seen and its thread left whole; one registering meanwhile waits for the cut, then
reads the thread as prune left it (a resume of a deleted thread is refused as unknown).

The registry belongs with the checkpoint database, because that is what the processes share:

- a SQLite checkpointer lives in the data directory, and so does its registry: the gate is
  ``<home>/runs.lock`` (an ``flock``), a run is a row in ``starts`` of the live runs file,
  committed at once, counted while its pid lives
  (:func:`~multiagent.observability.live.running_elsewhere`);
- a PostgreSQL checkpointer may be shared by machines that share no data directory, so its
  registry is in PostgreSQL (:class:`~multiagent.persistence.postgres_runs.PostgresRunRegistry`):
  the gate an advisory lock, a run a row counted while its session lives; the process's runs
  share one session (one connection per process and database, not per run), and prune and the
  ``threads`` look open one of their own.

Either way a holder that dies blocks no one (the kernel drops an ``flock``, the server a dead
session's locks) and its registration stops counting with it.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from pathlib import Path
from typing import Protocol

from multiagent.observability.live import live_writer, running_elsewhere
from multiagent.persistence._files import FileLock
from multiagent.persistence.checkpointer import checkpoint_backend
from multiagent.policies import Settings

#: The lock beside the live runs file.
LOCK_FILE = "runs.lock"


class RunRegistry(Protocol):
    """Where the runs on one checkpoint database register, and the gate they pass."""

    def gate(self, *, exclusive: bool) -> AbstractContextManager[None]:
        """Held shared while a run registers, exclusively while prune checks and cuts."""
        ...

    def register(self, thread_id: str) -> int:
        """Pass the gate shared and register a run of this process on ``thread_id``; return
        its entry."""
        ...

    def remove(self, entry: int) -> None:
        """The run of ``entry`` returned."""
        ...

    def running(self) -> dict[str, str]:
        """The threads other live processes run, each with the process that runs it."""
        ...


class HomeRunRegistry:
    """The registry of a data directory: ``runs.lock`` and the live runs file's ``starts``.

    Args:
        home: The data directory.
    """

    def __init__(self, home: Path) -> None:
        self.home = Path(home)
        self._lock = FileLock(self.home / LOCK_FILE)

    def gate(self, *, exclusive: bool) -> AbstractContextManager[None]:
        """``runs.lock``, shared or exclusive."""
        return self._lock.exclusive() if exclusive else self._lock.shared()

    def register(self, thread_id: str) -> int:
        """:meth:`add`, under the gate held shared."""
        with self.gate(exclusive=False):
            return self.add(thread_id)

    def add(self, thread_id: str) -> int:
        """A ``starts`` row, committed at once."""
        row = live_writer(self.home).commit_now(  # its connection, opened once per process
            "INSERT INTO starts (thread_id, pid, at) VALUES (?, ?, ?)",
            (thread_id, os.getpid(), time.time()),
        )
        assert row is not None  # an INSERT gives its row id
        return row

    def remove(self, entry: int) -> None:
        """Its ``starts`` row goes."""
        # left behind (a busy file), the row names this pid, counted only while it lives
        with suppress(sqlite3.Error):
            live_writer(self.home).commit_now("DELETE FROM starts WHERE id = ?", (entry,))

    def running(self) -> dict[str, str]:
        """:func:`~multiagent.observability.live.running_elsewhere`."""
        return {t: f"process {pid}" for t, pid in running_elsewhere(self.home).items()}


@contextmanager
def run_registry(settings: Settings, *, shared: bool = False) -> Iterator[RunRegistry]:
    """The registry of the configured checkpoint database, open for the ``with`` block.

    Args:
        settings: Resolved settings: the checkpoint database (and data directory).
        shared: With PostgreSQL, on the session the process's runs share (kept open after);
            otherwise on a connection of its own, closed after the block
            (:mod:`multiagent.persistence.postgres_runs`).
    """
    if checkpoint_backend(settings) == "postgres":
        from multiagent.persistence.postgres_runs import PostgresRunRegistry

        url = str(settings.checkpoint_url)
        with PostgresRunRegistry(url, shared=shared) as registry:
            yield registry
    else:
        yield HomeRunRegistry(settings.home)


@contextmanager
def registered_run(settings: Settings, thread_id: str) -> Iterator[None]:
    """List a run on ``thread_id`` as running for the ``with`` block, from its first line.

    Args:
        settings: Resolved settings: the checkpoint database (and data directory) the run uses.
        thread_id: The thread the run is about to read and write.
    """
    # one connection for all the process's runs on PostgreSQL, not one each
    with run_registry(settings, shared=True) as registry:
        entry = registry.register(thread_id)
        try:
            yield
        finally:
            registry.remove(entry)


def running_threads(settings: Settings) -> dict[str, str]:
    """The threads other live processes run now on the configured checkpoint database, each
    with the process that runs it (read without the gate: a look, not a cut)."""
    with run_registry(settings) as registry:
        return registry.running()


@contextmanager
def runs_held(settings: Settings) -> Iterator[dict[str, str]]:
    """No run starts while the ``with`` block runs; it gets the threads other processes run.

    Args:
        settings: Resolved settings: the checkpoint database (and data directory) pruned.

    Yields:
        Each thread another live process runs now, with that process (``process PID``, and
        ``on HOST`` for another machine's), read under the gate.
    """
    with run_registry(settings) as registry, registry.gate(exclusive=True):
        yield registry.running()


__all__ = [
    "LOCK_FILE",
    "HomeRunRegistry",
    "RunRegistry",
    "registered_run",
    "run_registry",
    "running_threads",
    "runs_held",
]
