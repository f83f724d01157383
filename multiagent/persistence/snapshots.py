"""``MemorySnapshot``: compressed, checksummed, per-agent snapshots of long-term memory.

A snapshot is one ``.json.gz`` file: a header (format, schema version, agent, created at, item
count, embedder, SHA-256 of the header and payload) and the payload (every item with id, document,
metadata and embedding, and the agent's thread index); with an encryption key configured
(``MULTIAGENT_ENCRYPTION_KEY``) the compressed bytes are sealed with AES-256-GCM
(:mod:`multiagent.persistence.crypto`), naming the key by its id. It is written atomically
(temporary file, fsync, rename), so a crash leaves the previous snapshots as they were; at most
``profile.memory.snapshots_per_agent`` are kept per agent. Restoring checks everything before
touching memory: a truncated, altered or foreign file is refused and nothing is overwritten.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from multiagent.errors import UsageError
from multiagent.persistence._collections import MemoryItems, agent_slug
from multiagent.persistence._files import atomic_write_bytes, remove_stale_temporaries
from multiagent.persistence._snapshot_format import (
    SCHEMA_VERSION,
    build_document,
    parse_document,
    read_header,
)
from multiagent.persistence.checkpointer import check_home, ensure_home
from multiagent.persistence.crypto import Keyring, configured_keyring
from multiagent.persistence.memory import ChromaMemoryStore, open_memory_store
from multiagent.policies import Settings

SNAPSHOT_DIR = "snapshots"
SUFFIX = ".json.gz"


@dataclass(frozen=True)
class SnapshotInfo:
    """One snapshot file and what its header says."""

    path: Path
    agent: str
    created_at: str
    item_count: int
    size_bytes: int
    checksum: str
    embedder: str | None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "path": str(self.path),
            "agent": self.agent,
            "created_at": self.created_at,
            "item_count": self.item_count,
            "size_bytes": self.size_bytes,
            "checksum": self.checksum,
            "embedder": self.embedder,
        }


def snapshot_root(settings: Settings) -> Path:
    """Where snapshots live: one directory per agent."""
    return settings.home / SNAPSHOT_DIR


def thread_index(items: MemoryItems) -> dict[str, dict[str, Any]]:
    """Threads the agent's memories came from: item count, first and last remembered."""
    index: dict[str, dict[str, Any]] = {}
    for metadata in items.metadatas:
        thread = metadata.get("thread_id")
        if not isinstance(thread, str):
            continue
        when = str(metadata.get("remembered_at", ""))
        entry = index.setdefault(thread, {"items": 0, "first": when, "last": when})
        entry["items"] += 1
        entry["first"] = min(entry["first"], when)
        entry["last"] = max(entry["last"], when)
    return dict(sorted(index.items()))


class MemorySnapshot:
    """Take, list, prune and restore snapshots of agent memory.

    Args:
        settings: Resolved settings: the data directory and ``profile.memory``.
        store: An open memory store to use; by default one is opened on first need.
        keyring: Seals new snapshots and opens encrypted ones (default: the configured key).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        store: ChromaMemoryStore | None = None,
        keyring: Keyring | None = None,
    ) -> None:
        self.settings = settings
        self.keyring = keyring if keyring is not None else configured_keyring()
        self.root = snapshot_root(settings)
        self.keep = settings.profile.memory.snapshots_per_agent
        self._store = store
        self._owns_store = store is None

    def __enter__(self) -> MemorySnapshot:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the memory store if this object opened it."""
        if self._owns_store and self._store is not None:
            self._store.close()
            self._store = None

    @property
    def store(self) -> ChromaMemoryStore:
        """The memory store, opened on first use."""
        if self._store is None:
            self._store = open_memory_store(self.settings)
        return self._store

    def take(self, agent: str, *, now: datetime | None = None) -> SnapshotInfo:
        """Snapshot ``agent``'s memory now, then drop its oldest snapshots beyond the limit."""
        ensure_home(self.settings)
        if agent not in self.store.agents():
            known = ", ".join(self.store.agents()) or "none"
            raise UsageError(f"agent {agent!r} has no memory to snapshot; agents: {known}")
        items, embedder = self.store.export(agent)
        created = (now or datetime.now(UTC)).astimezone(UTC)
        header, data = build_document(
            agent=agent,
            created_at=created.isoformat(),
            embedder=embedder,
            items=items,
            threads=thread_index(items),
        )
        directory = self.root / agent_slug(agent)
        path = directory / f"{agent_slug(agent)}-{created.strftime('%Y%m%dT%H%M%S%fZ')}{SUFFIX}"
        packed = gzip.compress(data, compresslevel=6, mtime=0)
        atomic_write_bytes(path, self.keyring.maybe_seal(packed))
        remove_stale_temporaries(directory)
        self.apply_retention(agent, taken=path)
        return snapshot_info(path, header)

    def take_all(self, *, now: datetime | None = None) -> list[SnapshotInfo]:
        """Snapshot every agent that has a memory."""
        return [self.take(agent, now=now) for agent in self.store.agents()]

    def files(self, agent: str | None = None) -> list[Path]:
        """Snapshot files, oldest first (by the time in their name), of one agent or all."""
        dirs = [self.root / agent_slug(agent)] if agent is not None else _subdirs(self.root)
        found = [p for d in dirs if d.is_dir() for p in d.glob(f"*{SUFFIX}") if p.is_file()]
        return sorted(found, key=lambda p: (p.parent.name, p.name))

    def list_snapshots(self, agent: str | None = None) -> list[SnapshotInfo]:
        """Snapshots with their headers; files whose header cannot be read are left out."""
        infos = []
        for path in self.files(agent):
            with contextlib.suppress(UsageError):
                infos.append(snapshot_info(path, read_header(path, keyring=self.keyring)))
        return infos

    def apply_retention(self, agent: str, *, taken: Path | None = None) -> list[Path]:
        """Delete ``agent``'s oldest snapshots beyond ``snapshots_per_agent``; return them.

        ``taken``, the snapshot just written, is kept whatever its name: after the clock was
        set back, older files carry later times, and the newest snapshot must not go first.
        """
        files = [p for p in self.files(agent) if p != taken]
        room = self.keep - (taken is not None)
        doomed = files[: max(0, len(files) - room)]
        for path in doomed:
            path.unlink(missing_ok=True)
        return doomed

    def load(self, path: Path) -> tuple[dict[str, Any], MemoryItems]:
        """Read and verify a snapshot; raise a one-line :class:`UsageError` if it is unusable."""
        if path.is_dir():
            found = len(list(path.glob(f"*{SUFFIX}")))
            raise UsageError(
                f"{path} is a directory, not a snapshot file; give one *{SUFFIX} file "
                f"({found} in that directory; `multiagent persistence status` lists them all)"
            )
        if not path.is_file():
            raise UsageError(f"snapshot file {path} does not exist")
        opened = self.keyring.open(path.read_bytes(), what=f"snapshot {path}")
        try:
            raw = gzip.decompress(opened)
        except (OSError, EOFError, zlib.error) as exc:
            raise UsageError(
                f"snapshot {path} is truncated or not a gzip file ({exc}); nothing was restored"
            ) from None
        try:
            document = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise UsageError(
                f"snapshot {path} is not valid JSON ({exc}); nothing was restored"
            ) from None
        return parse_document(document, source=str(path))

    def restore(self, path: Path) -> SnapshotInfo:
        """Make the snapshot's agent remember exactly what the snapshot holds.

        Raises:
            UsageError: The file is missing, truncated, altered (checksum), of another format
                or schema version; memory is left untouched.
        """
        check_home(self.settings)
        header, items = self.load(path)  # verified before anything on disk is touched
        ensure_home(self.settings)
        embedder = header.get("embedder") or "unknown"
        self.store.replace(header["agent"], items, embedder=str(embedder))
        return snapshot_info(path, header)


def _subdirs(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []


def snapshot_info(path: Path, header: Mapping[str, Any]) -> SnapshotInfo:
    """What a snapshot file and its (checked) header say."""
    embedder = header.get("embedder")
    return SnapshotInfo(
        path=path,
        agent=str(header["agent"]),
        created_at=str(header["created_at"]),
        item_count=int(header["item_count"]),
        size_bytes=path.stat().st_size,
        checksum=str(header["checksum"]),
        embedder=str(embedder) if embedder is not None else None,
    )


def file_digest(path: Path) -> str:
    """SHA-256 of a file's bytes (tests and status use it to show nothing changed)."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


__all__ = [
    "SCHEMA_VERSION",
    "MemorySnapshot",
    "SnapshotInfo",
    "file_digest",
    "snapshot_info",
    "thread_index",
]
