"""Chroma collections of agent memory: names, exporting every item, rebuilding without loss.

A rebuild (restore, compaction, re-embedding) fills a new collection first and only swaps it in
once it holds every item, so a crash half-way leaves the old collection whole; the next open
finishes or discards an interrupted swap (:func:`recover_rebuilds`). Under
:func:`~multiagent._interrupt.stop_on_ctrl_c` (the CLI's restore and compaction) Ctrl-C stops a
rebuild between batches or just before the swap, never inside it: the old collection stays.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple

from multiagent._crash import crash_point
from multiagent._interrupt import check_stop
from multiagent.errors import MultiagentError, UsageError

logger = logging.getLogger("multiagent.persistence.memory")

COLLECTION_PREFIX = "agent-"
REBUILD_SUFFIX = "-rebuild"
READY_SUFFIX = "-ready"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")

MetadataValue = str | int | float | bool


@dataclass
class MemoryItems:
    """Everything stored for one agent, in id order."""

    ids: list[str] = field(default_factory=list)
    documents: list[str] = field(default_factory=list)
    metadatas: list[dict[str, MetadataValue]] = field(default_factory=list)
    embeddings: list[list[float]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids)


def check_agent(agent: str) -> str:
    """Return ``agent`` if it can name a memory; raise a one-line error otherwise."""
    if not isinstance(agent, str) or not agent.strip() or len(agent) > 200:
        raise UsageError(f"invalid agent name {agent!r}; use 1-200 characters")
    return agent


class Note(NamedTuple):
    """Texts one agent remembers, checked, with the metadata stored on each of them."""

    agent: str
    texts: list[str]
    metadata: dict[str, MetadataValue]


def make_note(agent: str, texts: list[str], *, metadata: dict[str, str] | None = None) -> Note:
    """Check what ``remember`` was given and stamp it with the time it was remembered.

    Blank texts are dropped and repeats kept once; the metadata's keys and values must be
    strings (a one-line :class:`~multiagent.errors.UsageError` otherwise).
    """
    check_agent(agent)
    extra: dict[str, MetadataValue] = {}
    for key, value in (metadata or {}).items():
        if not isinstance(key, str) or not key or not isinstance(value, str):
            raise UsageError(
                f"invalid memory metadata {key!r}: {value!r}; keys and values must be strings"
            )
        extra[key] = value
    kept = [t for t in dict.fromkeys(texts) if isinstance(t, str) and t.strip()]
    extra.update({"agent": agent, "remembered_at": datetime.now(UTC).isoformat()})
    return Note(agent, kept, extra)


def agent_slug(agent: str) -> str:
    """A file- and collection-safe name for ``agent``, unique per agent (a hash suffix)."""
    check_agent(agent)
    readable = _UNSAFE.sub("-", agent).strip("-._")[:60] or "agent"
    digest = hashlib.sha256(agent.encode("utf-8")).hexdigest()[:8]
    return f"{readable}-{digest}"


def collection_name(agent: str) -> str:
    """The Chroma collection that holds ``agent``'s memory."""
    return f"{COLLECTION_PREFIX}{agent_slug(agent)}"


def find_collection(client: Any, name: str) -> Any | None:
    """The collection called ``name``, or ``None``."""
    names = {c.name for c in client.list_collections()}
    return client.get_collection(name) if name in names else None


def export_items(collection: Any) -> MemoryItems:
    """Every item of ``collection`` with its embedding, sorted by id."""
    raw = collection.get(include=["documents", "metadatas", "embeddings"])
    rows = sorted(
        zip(raw["ids"], raw["documents"], raw["metadatas"], raw["embeddings"], strict=True),
        key=lambda row: row[0],
    )
    items = MemoryItems()
    for item_id, document, metadata, embedding in rows:
        items.ids.append(str(item_id))
        items.documents.append(str(document))
        items.metadatas.append(dict(metadata or {}))
        items.embeddings.append([float(x) for x in embedding])
    return items


def _fill(client: Any, collection: Any, items: MemoryItems) -> None:
    batch = max(1, int(client.get_max_batch_size()))
    for start in range(0, len(items), batch):
        check_stop()
        end = start + batch
        collection.add(
            ids=items.ids[start:end],
            documents=items.documents[start:end],
            metadatas=items.metadatas[start:end] or None,
            embeddings=items.embeddings[start:end],
        )


def rebuild_collection(
    client: Any, name: str, *, metadata: dict[str, MetadataValue], items: MemoryItems
) -> None:
    """Replace collection ``name`` by a fresh one holding exactly ``items``.

    The fresh collection is filled under ``<name>-rebuild``, renamed ``<name>-ready`` once it
    holds every item, and only then swapped in. The caller holds the memory lock exclusively.
    """
    staging, ready = f"{name}{REBUILD_SUFFIX}", f"{name}{READY_SUFFIX}"
    for leftover in (staging, ready):
        with contextlib.suppress(Exception):
            client.delete_collection(leftover)
    fresh = client.create_collection(staging, metadata=metadata, embedding_function=None)
    try:
        if len(items):
            _fill(client, fresh, items)
        if fresh.count() != len(items):
            raise MultiagentError(
                f"rebuilding {name}: wrote {fresh.count()} of {len(items)} items; "
                "the old collection is kept"
            )
        fresh.modify(name=ready)
        crash_point("rebuild-swap")
        check_stop()  # the last point where Ctrl-C leaves the old collection as it was
    except BaseException:
        for leftover in (staging, ready):
            with contextlib.suppress(Exception):
                client.delete_collection(leftover)
        raise
    if find_collection(client, name) is not None:
        client.delete_collection(name)
    fresh.modify(name=name)


def is_staging(name: str) -> bool:
    """Whether ``name`` is a collection a rebuild is filling or about to swap in."""
    return name.endswith((REBUILD_SUFFIX, READY_SUFFIX))


def recover_rebuilds(client: Any) -> list[str]:
    """Finish or discard rebuilds a crash interrupted; return the names it touched."""
    names = {c.name for c in client.list_collections()}
    touched = []
    for staging in sorted(n for n in names if n.endswith(REBUILD_SUFFIX)):
        client.delete_collection(staging)  # never filled completely: the old one stands
        touched.append(staging[: -len(REBUILD_SUFFIX)])
    for ready in sorted(n for n in names if n.endswith(READY_SUFFIX)):
        target = ready[: -len(READY_SUFFIX)]
        if target in names:  # the swap never started: the old collection is authoritative
            client.delete_collection(ready)
        else:  # crashed between deleting the old collection and renaming the new one
            client.get_collection(ready).modify(name=target)
            logger.warning("agent memory: finished an interrupted rebuild of %s", target)
        touched.append(target)
    return touched
