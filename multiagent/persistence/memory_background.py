"""Agent memory that opens while the run starts and writes while the models answer.

Importing Chroma, opening its persistent client and reading the embedder's weights cost a few
hundred milliseconds of CPU. A workflow needs none of it before its first agent turn (the
planner neither recalls nor remembers), so :func:`open_agent_memory_in_background` checks at
once what a user can get wrong (the embedder asked for, the data directory) and leaves the
rest to one daemon thread, which then writes what the agents remember:

- ``recall`` of an agent that has no collection on disk (Chroma's SQLite file says so, read
  without importing Chroma) and has remembered nothing in this process answers ``[]`` at once;
  any other ``recall`` waits for the store to open and for this process's pending writes, so
  an agent always finds what it remembered earlier in the run;
- ``remember`` checks its arguments, queues the note and returns: the thread writes the notes
  queued meanwhile in one batch (one embedding pass, one upsert per agent) while other agents'
  and the synthesizer's model calls are out, instead of on the agent's own path. A write that
  fails is raised by the next ``recall`` or ``remember``, or by :meth:`close`. The note is
  committed to a write-ahead journal (:mod:`multiagent.persistence._note_journal`) before
  ``remember`` returns, so a process killed before the thread wrote it loses nothing: the next
  store that opens writes it.

Imports and embeddings hold the GIL (numpy's BLAS excepted): the thread gains only where it
overlaps a real wait, the model calls' latency. So a store with something to recall opens at
once (the agents will wait for it), and a store that holds nothing yet (no directory, no
journaled note: a new home) opens when it is first needed, at the first ``remember``, while
the other agents' model calls are out, instead of competing with the graph's start for the
GIL; a run that needs it not at all never opens it. :meth:`close` writes what is queued.
"""

from __future__ import annotations

import logging
import queue
import threading
from typing import TYPE_CHECKING, Self

from langchain_core.embeddings import Embeddings

from multiagent._interrupt import StopRequested
from multiagent.errors import UsageError
from multiagent.persistence._chroma_open import has_collection
from multiagent.persistence._collections import Note, check_agent, collection_name, make_note
from multiagent.persistence._note_journal import NoteJournal, journal_dir
from multiagent.persistence.checkpointer import ensure_home
from multiagent.persistence.embeddings import load_embeddings
from multiagent.policies import Settings

if TYPE_CHECKING:
    from multiagent.persistence.memory import ChromaAgentMemory

logger = logging.getLogger("multiagent.persistence.memory")


class BackgroundAgentMemory:
    """:class:`~multiagent.persistence.memory.AgentMemory` whose store opens and writes on a
    thread.

    Args:
        settings: Resolved settings; memory lives in ``<home>/chroma``.
        embeddings: The embedder (its weights are read on the same thread when it can).
    """

    def __init__(self, settings: Settings, *, embeddings: Embeddings) -> None:
        from multiagent.persistence.memory import memory_path

        self.embeddings = embeddings
        self.path = memory_path(settings)
        self._memory: ChromaAgentMemory | None = None
        self._error: BaseException | None = None  # opening failed
        self._write_error: BaseException | None = None
        self._raised = False
        self._used = False
        self._ready = threading.Event()
        self._notes: queue.SimpleQueue[tuple[int, Note] | None] = queue.SimpleQueue()
        self._journal = NoteJournal(journal_dir(self.path))
        #: Cleared, the thread holds queued notes back (tests kill the process meanwhile).
        self.writes_allowed = threading.Event()
        self.writes_allowed.set()
        self._written = threading.Condition()
        self._pending = 0
        self._remembered: set[str] = set()
        #: Set, the thread opens the store: at once when it has something to recall.
        self._wanted = threading.Event()
        self._closing = False
        if self.path.exists() or not self._journal.is_empty():
            self._wanted.set()
        self._thread = threading.Thread(
            target=self._serve, args=(settings,), name="agent-memory", daemon=True
        )
        self._thread.start()

    def _open(self, settings: Settings) -> None:
        """Open the store and read the embedder; keep what went wrong for the first caller."""
        try:
            from multiagent.persistence.memory import open_agent_memory  # imports Chroma

            self._memory = open_agent_memory(settings, embeddings=self.embeddings)
            load = getattr(self.embeddings, "load", None)
            if callable(load):
                load()
        except BaseException as exc:  # re-raised where memory is used, in the caller's thread
            self._error = exc
        finally:
            self._ready.set()

    def _serve(self, settings: Settings) -> None:
        """Open the store when wanted, then write queued notes in batches until :meth:`close`."""
        self._wanted.wait()
        if self._closing and not self._used:
            return  # closed before anything was recalled or remembered: nothing to open for
        self._open(settings)
        while True:
            batch = [self._notes.get()]
            while True:  # whatever queued up meanwhile goes in the same batch
                try:
                    batch.append(self._notes.get_nowait())
                except queue.Empty:
                    break
            notes = [entry for entry in batch if entry is not None]
            if notes:
                self.writes_allowed.wait()
                self._write(notes)
            if len(notes) < len(batch):
                return

    def _write(self, notes: list[tuple[int, Note]]) -> None:
        try:
            if self._memory is None:
                raise self._error or RuntimeError("agent memory is not open")
            self._memory.remember_all([note for _row, note in notes])
            self._journal.delete([row for row, _note in notes])
        except StopRequested:  # Ctrl-C while maintenance held the store: still journaled
            logger.info("agent memory: %d notes left for the next open (Ctrl-C)", len(notes))
        except BaseException as exc:  # raised by the next call, or by close
            if self._write_error is None:
                self._write_error = exc
        finally:
            with self._written:
                self._pending -= len(notes)
                self._written.notify_all()

    @property
    def opened(self) -> bool:
        """Whether the store is open (the thread opened it without error)."""
        return self._ready.is_set() and self._memory is not None

    def wait(self) -> ChromaAgentMemory:
        """The open store, once the thread has opened it.

        Raises:
            Exception: Whatever opening the store raised.
        """
        self._used = True
        self._wanted.set()
        self._ready.wait()
        if self._error is not None:
            self._raised = True
            raise self._error
        assert self._memory is not None  # the thread either opened it or kept an error
        return self._memory

    def flush(self) -> None:
        """Wait until every note queued so far is written.

        Raises:
            Exception: Whatever a write raised (once).
        """
        with self._written:
            self._written.wait_for(lambda: self._pending == 0)
        self._raise_write_error()

    def _raise_write_error(self) -> None:
        error, self._write_error = self._write_error, None
        if error is not None:
            self._raised = True
            raise error

    def _nothing_stored(self, agent: str) -> bool:
        """Whether ``agent`` surely has no memory yet, known without waiting for Chroma."""
        if self._ready.is_set():
            return False  # the store is open: it answers as fast
        with self._written:
            if agent in self._remembered:
                return False
        if has_collection(self.path, collection_name(agent)) is not False:
            return False
        return not self._journal.holds(agent)  # a stopped process's note is written on open

    def recall(self, agent: str, query: str, *, k: int = 3) -> list[str]:
        """Return up to ``k`` texts of ``agent``'s memory, the most relevant to ``query`` first."""
        check_agent(agent)
        if k < 1:
            raise UsageError(f"invalid k={k} for recall; use k >= 1")
        self._raise_write_error()
        if self._nothing_stored(agent):
            return []
        memory = self.wait()
        self.flush()
        return memory.recall(agent, query, k=k)

    def remember(
        self, agent: str, texts: list[str], *, metadata: dict[str, str] | None = None
    ) -> None:
        """Queue ``texts`` for ``agent``'s memory, with ``metadata`` on each (checked now)."""
        from multiagent.persistence.memory import item_id

        note = make_note(agent, texts, metadata=metadata)
        self._raise_write_error()
        if not note.texts:
            return
        self._used = True
        # committed before this returns: a crash before the thread writes it loses nothing
        row = self._journal.append(note, [item_id(agent, text) for text in note.texts])
        with self._written:
            self._pending += 1
            self._remembered.add(agent)
        self._notes.put((row, note))
        self._wanted.set()

    def close(self) -> None:
        """Write what is queued, stop the thread and close the store it opened.

        A store that failed to open and was never used ends the run with a warning, not an
        error: the run did not need it.

        Raises:
            Exception: A write that failed and was not raised yet (opening included).
        """
        if self._thread.is_alive():
            self._notes.put(None)
        self._closing = True
        self._wanted.set()  # a store never needed is not opened at all (see _serve)
        self._thread.join()
        self._journal.close()
        if self._memory is not None:
            self._memory.close()
        if self._write_error is not None:
            self._raise_write_error()
        if self._error is not None and not self._raised:
            if self._used:
                self._raised = True
                raise self._error
            logger.warning("agent memory could not be opened: %s", self._error)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_agent_memory_in_background(
    settings: Settings, *, embeddings: Embeddings | str = "auto"
) -> BackgroundAgentMemory:
    """Check the memory options now and open agent memory on a background thread.

    Args:
        settings: Resolved settings; memory lives in ``<home>/chroma``.
        embeddings: An embedder, or ``"auto"`` / ``"minilm"`` / ``"lexical"``.

    Raises:
        UsageError: The data directory is not writable, or the embedder is unknown or not
            installed (before any thread starts).
    """
    ensure_home(settings)
    chosen = load_embeddings(embeddings) if isinstance(embeddings, str) else embeddings
    return BackgroundAgentMemory(settings, embeddings=chosen)
