"""Agent long-term memory: a Chroma persistent store under ``MULTIAGENT_HOME``.

Nodes call :meth:`AgentMemory.recall` before an agent acts and :meth:`AgentMemory.remember`
after it has answered; both use Chroma's collections directly (an upsert and a
nearest-neighbour query, as langchain-chroma's ``add_texts`` and
``similarity_search_with_score`` do, without looking the collection up on every call) with the
offline embedder of :mod:`multiagent.persistence.embeddings`. Each agent has its own
collection; the notes of several agents are written in one batch
(:meth:`ChromaAgentMemory.remember_all`: one embedding pass, one upsert per agent). Writers hold the
memory lock shared; maintenance (backup, vacuum, compaction, restore) holds it exclusively.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol, Self, TypeVar, runtime_checkable

from langchain_core.embeddings import Embeddings

from multiagent._scrub import scrub_heap
from multiagent.errors import UsageError
from multiagent.persistence._chroma_open import close_persistent_client, open_persistent_client
from multiagent.persistence._collections import (
    COLLECTION_PREFIX,
    MemoryItems,
    MetadataValue,
    Note,
    check_agent,
    collection_name,
    export_items,
    find_collection,
    is_staging,
    make_note,
    rebuild_collection,
    recover_rebuilds,
)
from multiagent.persistence._files import FileLock
from multiagent.persistence._note_journal import NoteJournal, journal_dir
from multiagent.persistence.checkpointer import ensure_home
from multiagent.persistence.embeddings import embedder_name, load_embeddings
from multiagent.policies import Settings

logger = logging.getLogger("multiagent.persistence.memory")

MEMORY_DIR = "chroma"
MEMORY_LOCK = "chroma.lock"
_TIE_MARGIN = 8
T = TypeVar("T")


@runtime_checkable
class AgentMemory(Protocol):
    """What graph nodes need from long-term memory."""

    def recall(self, agent: str, query: str, *, k: int = 3) -> list[str]:
        """Return up to ``k`` remembered texts of ``agent``, most relevant to ``query`` first."""
        ...

    def remember(
        self, agent: str, texts: list[str], *, metadata: dict[str, str] | None = None
    ) -> None:
        """Store ``texts`` in ``agent``'s memory, with ``metadata`` on each (e.g. thread_id)."""
        ...


def memory_path(settings: Settings) -> Path:
    """The Chroma persist directory."""
    return settings.home / MEMORY_DIR


def memory_lock(settings: Settings) -> FileLock:
    """The lock writers share and maintenance takes exclusively (outside the persist dir)."""
    return FileLock(settings.home / MEMORY_LOCK)


def open_chroma_client(path: Path) -> Any:
    """A Chroma persistent client at ``path`` with telemetry off (nothing leaves the machine).

    The heap is scrubbed first (:func:`multiagent._scrub.scrub_heap`): Chroma's index files
    would otherwise carry stale bytes of freed memory, raw input among them.
    """
    scrub_heap()
    return open_persistent_client(path)


def item_id(agent: str, text: str) -> str:
    """Stable id of a remembered text: remembering it again updates it, never duplicates it."""
    return hashlib.sha256(f"{agent}\x00{text}".encode()).hexdigest()[:32]


def collection_metadata(agent: str, embedder: str) -> dict[str, MetadataValue]:
    """Metadata of an agent's collection: the agent, the embedder of its vectors, cosine."""
    return {"hnsw:space": "cosine", "agent": agent, "embedder": embedder}


class ChromaMemoryStore:
    """The stored collections themselves, without an embedder: list, export, replace, wipe.

    Snapshots and maintenance use this; it never loads a model.
    """

    def __init__(self, path: Path, *, lock: FileLock) -> None:
        self.path = path
        self.lock = lock
        self.client = open_chroma_client(path)
        if any(is_staging(c.name) for c in self.client.list_collections()):
            with self.lock.exclusive():  # only after a crash: do not wait on maintenance else
                recover_rebuilds(self.client)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the Chroma client (its files stay)."""
        close_persistent_client(self.client)

    def agents(self) -> list[str]:
        """Names of the agents that have a memory."""
        names = []
        for collection in self.client.list_collections():
            name = collection.name
            if name.startswith(COLLECTION_PREFIX) and not is_staging(name):
                agent = (collection.metadata or {}).get("agent")
                if isinstance(agent, str):
                    names.append(agent)
        return sorted(names)

    def count(self, agent: str) -> int:
        """How many texts ``agent`` remembers."""
        found = find_collection(self.client, collection_name(agent))
        return 0 if found is None else int(found.count())

    def export(self, agent: str) -> tuple[MemoryItems, str | None]:
        """Every item of ``agent`` with its embedding, and the embedder that made them."""
        found = find_collection(self.client, collection_name(agent))
        if found is None:
            return MemoryItems(), None
        with self.lock.shared():
            items = export_items(found)
        embedder = (found.metadata or {}).get("embedder")
        return items, str(embedder) if embedder is not None else None

    def replace(self, agent: str, items: MemoryItems, *, embedder: str) -> None:
        """Make ``agent``'s memory exactly ``items``, all or nothing; restore uses it."""
        check_agent(agent)
        metadata = collection_metadata(agent, embedder)
        with self.lock.exclusive():
            rebuild_collection(self.client, collection_name(agent), metadata=metadata, items=items)

    def wipe(self, agent: str) -> None:
        """Forget everything ``agent`` remembers."""
        with self.lock.exclusive():
            if find_collection(self.client, collection_name(agent)) is not None:
                self.client.delete_collection(collection_name(agent))


class ChromaAgentMemory(ChromaMemoryStore):
    """:class:`AgentMemory` on a Chroma persistent client, one collection per agent."""

    def __init__(self, path: Path, *, embeddings: Embeddings, lock: FileLock) -> None:
        super().__init__(path, lock=lock)
        self.embeddings = embeddings
        self.embedder = embedder_name(embeddings)
        # collection handles, each looked up (and re-embedded if needed) once per process
        self._handles: dict[str, Any] = {}
        self._handles_lock = threading.RLock()
        self.journal = NoteJournal(journal_dir(path))
        try:
            self._write_orphans()
        except BaseException:
            self.close()
            raise

    def _write_orphans(self) -> None:
        """Write the notes that processes now gone queued but never wrote, then forget them."""
        orphans = self.journal.claim_orphans()
        if orphans:
            self.remember_all([note for _row, note in orphans])
            self.journal.delete([row for row, _note in orphans])
            logger.info("agent memory: wrote %d notes a stopped process had queued", len(orphans))

    def close(self) -> None:
        """Release the Chroma client and the notes journal (their files stay)."""
        self.journal.close()
        super().close()

    def _collection(self, agent: str, *, create: bool) -> Any | None:
        """``agent``'s collection (re-embedded first if another embedder wrote it)."""
        name = collection_name(agent)
        with self._handles_lock:
            found = self._handles.get(name)
            if found is not None:
                return found
            self._reembed_if_needed(agent)
            if create:
                found = self.client.get_or_create_collection(
                    name,
                    metadata=collection_metadata(agent, self.embedder),
                    embedding_function=None,
                )
            else:
                found = find_collection(self.client, name)
            if found is not None:
                self._handles[name] = found
            return found

    def _with_collection(self, agent: str, use: Callable[[Any], T], *, create: bool) -> T | None:
        """``use(collection)``; a handle gone stale (another process rebuilt or deleted the
        collection since it was looked up) is looked up again, once."""
        collection = self._collection(agent, create=create)
        if collection is None:
            return None
        try:
            return use(collection)
        except Exception:
            current = find_collection(self.client, collection_name(agent))
            if current is not None and current.id == collection.id:
                raise  # the handle is current: the error is real
            self._forget_handle(agent)
        collection = self._collection(agent, create=create)
        return None if collection is None else use(collection)

    def _forget_handle(self, agent: str) -> None:
        with self._handles_lock:
            self._handles.pop(collection_name(agent), None)

    def replace(self, agent: str, items: MemoryItems, *, embedder: str) -> None:
        """Make ``agent``'s memory exactly ``items``, all or nothing; restore uses it."""
        with self._handles_lock:
            self._forget_handle(agent)
            super().replace(agent, items, embedder=embedder)

    def wipe(self, agent: str) -> None:
        """Forget everything ``agent`` remembers."""
        with self._handles_lock:
            self._forget_handle(agent)
            super().wipe(agent)

    def _reembed_if_needed(self, agent: str) -> None:
        """Re-embed a collection written by another embedder (vectors must not mix)."""
        existing = find_collection(self.client, collection_name(agent))
        if existing is None:
            return
        stored = (existing.metadata or {}).get("embedder")
        if stored == self.embedder:
            return
        items, _ = self.export(agent)
        if items.documents:
            items.embeddings = self.embeddings.embed_documents(items.documents)
        self.replace(agent, items, embedder=self.embedder)
        logger.warning(
            "agent memory: re-embedded %d items of %s (%s -> %s)",
            len(items),
            agent,
            stored,
            self.embedder,
        )

    def remember(
        self, agent: str, texts: list[str], *, metadata: dict[str, str] | None = None
    ) -> None:
        """Store ``texts`` in ``agent``'s memory.

        Args:
            agent: The agent's name.
            texts: What it learned; blank texts are ignored, repeats update the stored copy.
            metadata: String metadata stored with every text (``thread_id`` feeds the
                snapshot's thread index).
        """
        self.remember_all([make_note(agent, texts, metadata=metadata)])

    def remember_all(self, notes: Sequence[Note]) -> None:
        """Store the notes of one or more agents: one embedding pass, one upsert per agent.

        Args:
            notes: Checked notes (:func:`~multiagent.persistence._collections.make_note`); a
                text remembered again, here or before, updates its stored copy.
        """
        kept = [note for note in notes if note.texts]
        if not kept:
            return
        vectors = iter(self.embeddings.embed_documents([t for n in kept for t in n.texts]))
        rows: dict[str, dict[str, tuple[str, dict[str, MetadataValue], list[float]]]] = {}
        for note in kept:
            mine = rows.setdefault(note.agent, {})
            for text in note.texts:  # the later note's copy of a text wins
                mine[item_id(note.agent, text)] = (text, dict(note.metadata), next(vectors))
        for agent, items in rows.items():

            def upsert(collection: Any, items: dict[str, Any] = items) -> None:
                with self.lock.shared():
                    collection.upsert(
                        ids=list(items),
                        documents=[row[0] for row in items.values()],
                        metadatas=[row[1] for row in items.values()],
                        embeddings=[row[2] for row in items.values()],
                    )

            self._with_collection(agent, upsert, create=True)

    def recall(self, agent: str, query: str, *, k: int = 3) -> list[str]:
        """Return up to ``k`` texts of ``agent``'s memory, the most relevant to ``query`` first."""
        check_agent(agent)
        if k < 1:
            raise UsageError(f"invalid k={k} for recall; use k >= 1")
        if not query.strip():
            return []

        def search(collection: Any) -> list[tuple[str, float]]:
            with self.lock.shared():
                count = int(collection.count())
            if count == 0:
                return []
            vector = self.embeddings.embed_query(query)
            with self.lock.shared():
                # a few extra candidates, so that equal distances at the cut are settled by
                # text and a rebuilt index (restore, compaction) answers as the old one did
                found = collection.query(
                    query_embeddings=[vector],
                    n_results=min(k + _TIE_MARGIN, count),
                    include=["documents", "distances"],
                )
            pairs = zip(found["documents"][0], found["distances"][0], strict=True)
            return [(str(text), float(distance)) for text, distance in pairs if text is not None]

        found = self._with_collection(agent, search, create=False) or []
        ranked = sorted(found, key=lambda pair: (round(pair[1], 6), pair[0]))
        return [text for text, _distance in ranked[:k]]


def open_memory_store(settings: Settings) -> ChromaMemoryStore:
    """Open the stored memory collections without an embedder (snapshots, maintenance)."""
    ensure_home(settings)
    return ChromaMemoryStore(memory_path(settings), lock=memory_lock(settings))


def open_agent_memory(
    settings: Settings, *, embeddings: Embeddings | str = "auto"
) -> ChromaAgentMemory:
    """Open agent memory under ``settings.home`` (created if needed).

    Args:
        settings: Resolved settings; memory lives in ``<home>/chroma``.
        embeddings: An embedder, or ``"auto"`` / ``"minilm"`` / ``"lexical"``.

    Raises:
        UsageError: The data directory is not writable, or the embedder is unknown.
    """
    ensure_home(settings)
    chosen = load_embeddings(embeddings) if isinstance(embeddings, str) else embeddings
    return ChromaAgentMemory(memory_path(settings), embeddings=chosen, lock=memory_lock(settings))
