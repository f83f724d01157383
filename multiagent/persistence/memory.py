"""Agent long-term memory: a Chroma persistent store under ``MULTIAGENT_HOME``.

Nodes call :meth:`AgentMemory.recall` before an agent acts and :meth:`AgentMemory.remember`
after it has answered; both go through langchain-chroma with the offline embedder of
:mod:`multiagent.persistence.embeddings`. Each agent has its own collection. Writers hold the
memory lock shared; maintenance (backup, vacuum, compaction, restore) holds it exclusively.
"""

from __future__ import annotations

import hashlib
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, Self, runtime_checkable

import chromadb
from chromadb.config import Settings as ChromaSettings
from langchain_chroma import Chroma
from langchain_core.embeddings import Embeddings

from multiagent._scrub import scrub_heap
from multiagent.errors import UsageError
from multiagent.persistence._collections import (
    COLLECTION_PREFIX,
    MemoryItems,
    MetadataValue,
    check_agent,
    collection_name,
    export_items,
    find_collection,
    is_staging,
    rebuild_collection,
    recover_rebuilds,
)
from multiagent.persistence._files import FileLock
from multiagent.persistence.checkpointer import ensure_home
from multiagent.persistence.embeddings import embedder_name, load_embeddings
from multiagent.policies import Settings

logger = logging.getLogger("multiagent.persistence.memory")

MEMORY_DIR = "chroma"
MEMORY_LOCK = "chroma.lock"
_TIE_MARGIN = 8


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
    return chromadb.PersistentClient(
        path=str(path), settings=ChromaSettings(anonymized_telemetry=False)
    )


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
        self.client.close()

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

    def _store(self, agent: str) -> Chroma:
        return Chroma(
            collection_name=collection_name(agent),
            embedding_function=self.embeddings,
            client=self.client,
            collection_metadata=collection_metadata(agent, self.embedder),
        )

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
        check_agent(agent)
        extra = _check_metadata(metadata)
        kept = [t for t in dict.fromkeys(texts) if isinstance(t, str) and t.strip()]
        if not kept:
            return
        self._reembed_if_needed(agent)
        now = datetime.now(UTC).isoformat()
        metadatas: list[dict[str, Any]] = [
            {**extra, "agent": agent, "remembered_at": now} for _ in kept
        ]
        with self.lock.shared():
            self._store(agent).add_texts(
                kept, metadatas=metadatas, ids=[item_id(agent, t) for t in kept]
            )

    def recall(self, agent: str, query: str, *, k: int = 3) -> list[str]:
        """Return up to ``k`` texts of ``agent``'s memory, the most relevant to ``query`` first."""
        check_agent(agent)
        if k < 1:
            raise UsageError(f"invalid k={k} for recall; use k >= 1")
        if find_collection(self.client, collection_name(agent)) is None or not query.strip():
            return []
        self._reembed_if_needed(agent)
        with self.lock.shared():
            store = self._store(agent)
            count = store._collection.count()
            if count == 0:
                return []
            # a few extra candidates, so that equal distances at the cut are settled by text
            # and a rebuilt index (restore, compaction) answers exactly as the old one did
            found = store.similarity_search_with_score(query, k=min(k + _TIE_MARGIN, count))
        ranked = sorted(found, key=lambda pair: (round(pair[1], 6), pair[0].page_content))
        return [doc.page_content for doc, _distance in ranked[:k]]


def _check_metadata(metadata: dict[str, str] | None) -> dict[str, str]:
    if metadata is None:
        return {}
    for key, value in metadata.items():
        if not isinstance(key, str) or not key or not isinstance(value, str):
            raise UsageError(
                f"invalid memory metadata {key!r}: {value!r}; keys and values must be strings"
            )
    return dict(metadata)


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
