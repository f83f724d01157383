"""A write-ahead journal of the notes agent memory has queued but not written to Chroma yet.

:class:`~multiagent.persistence.memory_background.BackgroundAgentMemory` queues a remembered
note and writes it later, on its thread. LangGraph may checkpoint the agent's node in between,
and a resumed run does not run that node again: a process killed before the write would lose
the note for good. So ``remember`` appends the note to this journal, a SQLite file in WAL mode,
and returns only once the row is committed (a committed WAL row survives the process, however
it dies); the thread deletes the rows it has written.

Each process appends under an owner name (its pid and a random suffix) and holds an exclusive
``flock`` on ``<owner>.owner`` beside the journal while it lives, the check the counter slots
use (:func:`multiagent.models._counter_slots.owner_dead`). When a store opens,
:meth:`NoteJournal.claim_orphans` hands it the rows of owners that are gone: it writes them
(an upsert by the note's ids, so writing one twice is harmless) and deletes them. Rows of a
live process are never taken: that process writes them itself.

The journal lives beside Chroma's persist directory, not in it: backups copy that directory
file by file and restores replace it, and neither should carry half-written queue rows.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sqlite3
import threading
import uuid
from pathlib import Path

from multiagent._sqlite import ensure_wal
from multiagent.models._counter_slots import owner_dead
from multiagent.persistence._collections import Note

JOURNAL_FILE = "notes.sqlite3"
_OWNER_SUFFIX = ".owner"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS notes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    owner TEXT NOT NULL,
    pid INTEGER NOT NULL,
    agent TEXT NOT NULL,
    texts TEXT NOT NULL,
    metadata TEXT NOT NULL,
    item_ids TEXT NOT NULL
)
"""


def journal_dir(persist_dir: Path) -> Path:
    """The journal's directory for a Chroma persist directory (its sibling)."""
    return persist_dir.with_name(f"{persist_dir.name}-pending")


class NoteJournal:
    """The notes journal of one process, opened on first use.

    Args:
        directory: Where the journal and the owners' lock files live (created when needed).
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.owner = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
        self._lock = threading.Lock()
        self._connection: sqlite3.Connection | None = None
        self._owner_fd = -1

    def _connect(self) -> sqlite3.Connection:
        if self._connection is None:
            self.directory.mkdir(parents=True, exist_ok=True)
            connection = sqlite3.connect(
                self.directory / JOURNAL_FILE,
                timeout=30.0,
                isolation_level=None,
                check_same_thread=False,  # calls are serialized by self._lock
            )
            ensure_wal(connection)  # workers creating the journal at once may race the switch
            connection.execute("PRAGMA synchronous = NORMAL")  # a process crash loses nothing
            connection.execute(_SCHEMA)
            self._connection = connection
        return self._connection

    def _hold_owner_lock(self) -> None:
        """Take this process's owner lock before its first row exists."""
        if self._owner_fd >= 0:
            return
        path = self.directory / f"{self.owner}{_OWNER_SUFFIX}"
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        self._owner_fd = fd

    def append(self, note: Note, item_ids: list[str]) -> int:
        """Commit ``note`` (with the ids the store will write it under); return its row id."""
        with self._lock:
            connection = self._connect()
            self._hold_owner_lock()
            cursor = connection.execute(
                "INSERT INTO notes (owner, pid, agent, texts, metadata, item_ids)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (
                    self.owner,
                    os.getpid(),
                    note.agent,
                    json.dumps(note.texts),
                    json.dumps(note.metadata),
                    json.dumps(item_ids),
                ),
            )
            return int(cursor.lastrowid or 0)

    def delete(self, rows: list[int]) -> None:
        """Forget rows whose notes are in the store."""
        if not rows:
            return
        with self._lock:
            connection = self._connect()
            connection.executemany("DELETE FROM notes WHERE id = ?", [(row,) for row in rows])

    def holds(self, agent: str) -> bool:
        """Whether any process's row for ``agent`` waits in the journal."""
        return self._has_row("WHERE agent = ?", (agent,))

    def is_empty(self) -> bool:
        """Whether no process's row waits in the journal."""
        return not self._has_row("", ())

    def _has_row(self, where: str, args: tuple[str, ...]) -> bool:
        if not (self.directory / JOURNAL_FILE).is_file():
            return False
        with self._lock:
            found = self._connect().execute(f"SELECT 1 FROM notes {where} LIMIT 1", args).fetchone()
        return found is not None

    def _gone(self, owner: str) -> bool:
        path = self.directory / f"{owner}{_OWNER_SUFFIX}"
        return owner != self.owner and (not path.exists() or owner_dead(path))

    def claim_orphans(self) -> list[tuple[int, Note]]:
        """Make the rows of owners that are gone this process's; return them, oldest first.

        The caller writes them to the store and then :meth:`delete`\\ s them; if it dies first,
        they are orphans again for the next store that opens.
        """
        if not (self.directory / JOURNAL_FILE).is_file():
            return []
        with self._lock:
            connection = self._connect()
            owners = [row[0] for row in connection.execute("SELECT DISTINCT owner FROM notes")]
            gone = [owner for owner in owners if self._gone(owner)]
            if not gone:
                return []
            self._hold_owner_lock()
            connection.execute("BEGIN IMMEDIATE")
            try:
                marks = ",".join("?" * len(gone))  # placeholders only: values are bound
                found = connection.execute(
                    f"SELECT id, agent, texts, metadata FROM notes WHERE owner IN ({marks})"
                    " ORDER BY id",
                    gone,
                ).fetchall()
                connection.execute(
                    f"UPDATE notes SET owner = ?, pid = ? WHERE owner IN ({marks})",
                    (self.owner, os.getpid(), *gone),
                )
                connection.execute("COMMIT")
            except BaseException:
                connection.execute("ROLLBACK")
                raise
        for owner in gone:  # their rows are ours now
            with contextlib.suppress(OSError):
                (self.directory / f"{owner}{_OWNER_SUFFIX}").unlink()
        return [
            (int(row), Note(str(agent), json.loads(texts), json.loads(metadata)))
            for row, agent, texts, metadata in found
        ]

    def close(self) -> None:
        """Close the journal; give up the owner lock once none of this process's rows is left
        (rows left, of a write that failed, go to the next store that opens)."""
        with self._lock:
            if self._connection is not None:
                left = self._connection.execute(
                    "SELECT 1 FROM notes WHERE owner = ? LIMIT 1", (self.owner,)
                ).fetchone()
                self._connection.close()
                self._connection = None
                if left is None and self._owner_fd >= 0:
                    with contextlib.suppress(OSError):
                        (self.directory / f"{self.owner}{_OWNER_SUFFIX}").unlink()
            if self._owner_fd >= 0:
                os.close(self._owner_fd)
                self._owner_fd = -1
