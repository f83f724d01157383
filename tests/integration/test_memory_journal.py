"""Queued memory writes survive the process: a note remembered and then SIGKILLed before the
memory thread wrote it is written by the next store that opens; a live process's queued notes
are left to it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from multiagent.persistence._note_journal import JOURNAL_FILE, NoteJournal, journal_dir
from multiagent.persistence.memory import memory_path, open_agent_memory
from multiagent.persistence.memory_background import BackgroundAgentMemory
from multiagent.policies import load_settings

NOTE = "The lighthouse keeper's cat is named Biscuit."

# remembers NOTE with the memory thread held back (writes_allowed cleared), says so, waits
_CHILD = f"""
import sys
from multiagent.persistence.embeddings import HashingEmbeddings
from multiagent.persistence.memory_background import BackgroundAgentMemory
from multiagent.policies import load_settings

memory = BackgroundAgentMemory(load_settings(), embeddings=HashingEmbeddings())
memory.writes_allowed.clear()
memory.remember("scout", [{NOTE!r}], metadata={{"thread_id": "t-1"}})
print("queued", flush=True)
sys.stdin.read()
"""


@contextmanager
def _child_with_a_queued_note() -> Iterator[subprocess.Popen[str]]:
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ},
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "queued"
        yield child
    finally:
        if child.poll() is None:
            child.kill()
        child.wait(timeout=30)


def _journal_rows(home: Path) -> list[tuple[str, int]]:
    import sqlite3

    database = journal_dir(home / "chroma") / JOURNAL_FILE
    with sqlite3.connect(database) as connection:
        return [(str(a), int(p)) for a, p in connection.execute("SELECT agent, pid FROM notes")]


def test_a_note_queued_by_a_process_killed_before_writing_it_is_recalled_by_the_next(
    isolated_env: Path,
) -> None:
    with _child_with_a_queued_note() as child:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
        assert _journal_rows(isolated_env) == [("scout", child.pid)]  # committed, not written

    settings = load_settings()
    with open_agent_memory(settings, embeddings="lexical") as store:
        assert store.recall("scout", "lighthouse cat name", k=1) == [NOTE]
        assert store.count("scout") == 1
    assert _journal_rows(isolated_env) == []  # written, so forgotten
    with open_agent_memory(settings, embeddings="lexical") as store:
        assert store.count("scout") == 1  # written once, not again


def test_background_recall_in_a_new_process_finds_a_killed_process_note(
    isolated_env: Path,
) -> None:
    from multiagent.persistence.embeddings import HashingEmbeddings

    with _child_with_a_queued_note() as child:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
    # the agent has no collection on disk, but the journal holds its note: recall waits for
    # the store, which writes the note as it opens
    with BackgroundAgentMemory(load_settings(), embeddings=HashingEmbeddings()) as memory:
        assert memory.recall("scout", "lighthouse cat name", k=1) == [NOTE]


def test_a_live_process_queued_notes_are_not_taken_by_another(isolated_env: Path) -> None:
    settings = load_settings()
    with _child_with_a_queued_note() as child:
        with open_agent_memory(settings, embeddings="lexical") as store:
            assert store.recall("scout", "lighthouse cat name") == []
            assert store.count("scout") == 0
        assert _journal_rows(isolated_env) == [("scout", child.pid)]  # still the child's
        child.kill()  # now it is gone: the next store writes its note
        child.wait(timeout=30)
    with open_agent_memory(settings, embeddings="lexical") as store:
        assert store.recall("scout", "lighthouse cat name", k=1) == [NOTE]


def test_a_clean_close_leaves_no_rows_and_no_owner_file(isolated_env: Path) -> None:
    from multiagent.persistence.embeddings import HashingEmbeddings

    settings = load_settings()
    with BackgroundAgentMemory(settings, embeddings=HashingEmbeddings()) as memory:
        memory.remember("scout", [NOTE])
    directory = journal_dir(memory_path(settings))
    assert _journal_rows(isolated_env) == []
    assert sorted(p.name for p in directory.iterdir() if p.suffix == ".owner") == []
    # a journal of this process never claims its own rows
    journal = NoteJournal(directory)
    assert journal.claim_orphans() == []
    journal.close()
