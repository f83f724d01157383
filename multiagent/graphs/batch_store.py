"""Where a batch keeps its definition and each finished item, so a stopped batch can resume.

A batch is a manifest (items, validators, threshold, chunk size) and one record per finished
item, keyed by batch id and item id and written once (a record stored twice keeps the first),
plus each chunk's usage. An item a stopped chunk left with some verdicts paid for has a
*partial* record (:class:`~multiagent.graphs.batch_records.ItemRecord`), still unfinished. The
one exception to "written once" is a record completed by a resume (its failed or unasked
validators asked): it replaces the record it completes (:meth:`BatchStore.complete`).
:class:`MemoryBatchStore` serves a batch run from Python without persistence;
:class:`SqliteBatchStore` keeps batches in ``MULTIAGENT_HOME/batches.sqlite`` for ``multiagent
validate --batch ... --resume``; the Redis store of the distributed queue
(:mod:`multiagent.distributed.queue`) keeps the same records.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

from multiagent._sqlite import ensure_wal
from multiagent.graphs.batch_records import ItemRecord
from multiagent.nodes.state import ValidationItem
from multiagent.nodes.usage import Usage
from multiagent.policies import Settings

STORE_FILE = "batches.sqlite"


@dataclass(frozen=True)
class BatchManifest:
    """What defines a batch: its items in input order and how they are judged."""

    batch_id: str
    items: list[ValidationItem]
    validators: list[str]
    threshold: float
    chunk_size: int

    def as_json(self) -> str:
        """The manifest as one JSON document."""
        return json.dumps(asdict(self), ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> BatchManifest:
        """Read back :meth:`as_json`."""
        return cls(**json.loads(text))


class BatchStore(Protocol):
    """What a batch run needs from where it keeps its progress."""

    def create(self, manifest: BatchManifest) -> None:
        """Keep a new batch's manifest."""

    def manifest(self, batch_id: str) -> BatchManifest | None:
        """The batch's manifest, or ``None`` when there is no such batch."""

    def finished_ids(self, batch_id: str) -> set[str]:
        """Ids of the finished items (a stored record, not a partial one)."""

    def store(
        self, batch_id: str, chunk_id: str, records: list[ItemRecord], usage: list[Usage]
    ) -> int:
        """Keep a chunk's records (each item once) and usage; return how many finished items
        were new (partial records are kept, and not counted)."""

    def complete(
        self, batch_id: str, chunk_id: str, records: list[ItemRecord], usage: list[Usage]
    ) -> None:
        """Replace the records of items a resume completed, and keep that chunk's usage."""

    def records(self, batch_id: str) -> dict[str, ItemRecord]:
        """Every stored record by item id."""

    def usage(self, batch_id: str) -> list[Usage]:
        """Every chunk's usage entries."""


class MemoryBatchStore:
    """A batch store in this process's memory (nothing survives the process)."""

    def __init__(self) -> None:
        self._manifests: dict[str, BatchManifest] = {}
        self._records: dict[str, dict[str, ItemRecord]] = {}
        self._usage: dict[str, dict[str, list[Usage]]] = {}

    def create(self, manifest: BatchManifest) -> None:
        """Keep a new batch's manifest."""
        self._manifests[manifest.batch_id] = manifest
        self._records[manifest.batch_id] = {}
        self._usage[manifest.batch_id] = {}

    def manifest(self, batch_id: str) -> BatchManifest | None:
        """The batch's manifest, or ``None``."""
        return self._manifests.get(batch_id)

    def finished_ids(self, batch_id: str) -> set[str]:
        """Ids of the finished items (a stored record, not a partial one)."""
        records = self._records.get(batch_id, {})
        return {item for item, record in records.items() if not record.partial}

    def store(
        self, batch_id: str, chunk_id: str, records: list[ItemRecord], usage: list[Usage]
    ) -> int:
        """Keep a chunk's records (each item once) and usage; return how many finished items
        were new (partial records are kept, and not counted)."""
        kept = self._records.setdefault(batch_id, {})
        new = 0
        for record in records:
            if record.result["id"] not in kept:
                kept[record.result["id"]] = record
                new += not record.partial
        self._usage.setdefault(batch_id, {}).setdefault(chunk_id, list(usage))
        return new

    def complete(
        self, batch_id: str, chunk_id: str, records: list[ItemRecord], usage: list[Usage]
    ) -> None:
        """Replace the records of items a resume completed, and keep that chunk's usage."""
        kept = self._records.setdefault(batch_id, {})
        for record in records:
            kept[record.result["id"]] = record
        self._usage.setdefault(batch_id, {}).setdefault(chunk_id, list(usage))

    def records(self, batch_id: str) -> dict[str, ItemRecord]:
        """Every stored record by item id."""
        return dict(self._records.get(batch_id, {}))

    def usage(self, batch_id: str) -> list[Usage]:
        """Every chunk's usage entries."""
        return [entry for chunk in self._usage.get(batch_id, {}).values() for entry in chunk]


_SCHEMA = """
CREATE TABLE IF NOT EXISTS batches (id TEXT PRIMARY KEY, manifest TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS records (
    batch TEXT NOT NULL, item TEXT NOT NULL, record TEXT NOT NULL, PRIMARY KEY (batch, item)
);
CREATE TABLE IF NOT EXISTS chunk_usage (
    batch TEXT NOT NULL, chunk TEXT NOT NULL, usage TEXT NOT NULL, PRIMARY KEY (batch, chunk)
);
"""


def batch_store_path(settings: Settings) -> Path:
    """Where local batches are kept."""
    return settings.home / STORE_FILE


class SqliteBatchStore:
    """Batches in one SQLite file; every chunk is stored in one transaction."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._db = connection
        self._lock = threading.Lock()  # one connection, shared by the batch's threads

    def create(self, manifest: BatchManifest) -> None:
        """Keep a new batch's manifest."""
        with self._lock, self._db:
            self._db.execute(
                "INSERT INTO batches (id, manifest) VALUES (?, ?)",
                (manifest.batch_id, manifest.as_json()),
            )

    def manifest(self, batch_id: str) -> BatchManifest | None:
        """The batch's manifest, or ``None``."""
        with self._lock:
            row = self._db.execute("SELECT manifest FROM batches WHERE id = ?", (batch_id,))
            found = row.fetchone()
        return None if found is None else BatchManifest.from_json(found[0])

    def finished_ids(self, batch_id: str) -> set[str]:
        """Ids of the finished items (a stored record, not a partial one)."""
        return {item for item, record in self.records(batch_id).items() if not record.partial}

    def store(
        self, batch_id: str, chunk_id: str, records: list[ItemRecord], usage: list[Usage]
    ) -> int:
        """Keep a chunk's records (each item once) and usage; return how many finished items
        were new (partial records are kept, and not counted)."""
        insert = "INSERT OR IGNORE INTO records (batch, item, record) VALUES (?, ?, ?)"
        with self._lock, self._db:
            before = self._db.total_changes
            self._db.executemany(insert, _rows(batch_id, records, partial=False))
            new = self._db.total_changes - before
            self._db.executemany(insert, _rows(batch_id, records, partial=True))
            self._db.execute(
                "INSERT OR IGNORE INTO chunk_usage (batch, chunk, usage) VALUES (?, ?, ?)",
                (batch_id, chunk_id, json.dumps(usage)),
            )
        return new

    def complete(
        self, batch_id: str, chunk_id: str, records: list[ItemRecord], usage: list[Usage]
    ) -> None:
        """Replace the records of items a resume completed, and keep that chunk's usage (one
        transaction)."""
        with self._lock, self._db:
            self._db.executemany(
                "INSERT OR REPLACE INTO records (batch, item, record) VALUES (?, ?, ?)",
                [(batch_id, r.result["id"], json.dumps(r.as_dict())) for r in records],
            )
            self._db.execute(
                "INSERT OR IGNORE INTO chunk_usage (batch, chunk, usage) VALUES (?, ?, ?)",
                (batch_id, chunk_id, json.dumps(usage)),
            )

    def records(self, batch_id: str) -> dict[str, ItemRecord]:
        """Every stored record by item id."""
        with self._lock:
            rows = self._db.execute("SELECT item, record FROM records WHERE batch = ?", (batch_id,))
            return {item: ItemRecord.from_dict(json.loads(text)) for item, text in rows}

    def usage(self, batch_id: str) -> list[Usage]:
        """Every chunk's usage entries."""
        with self._lock:
            rows = self._db.execute("SELECT usage FROM chunk_usage WHERE batch = ?", (batch_id,))
            return [entry for (text,) in rows for entry in json.loads(text)]


def _rows(batch_id: str, records: list[ItemRecord], *, partial: bool) -> list[tuple[str, str, str]]:
    """The rows of ``records`` that are (or are not) partial."""
    return [
        (batch_id, r.result["id"], json.dumps(r.as_dict())) for r in records if r.partial == partial
    ]


@contextmanager
def open_batch_store(settings: Settings, *, create: bool = True) -> Iterator[SqliteBatchStore]:
    """The local batch store under ``settings.home``; closed on exit."""
    path = batch_store_path(settings)
    if create:
        path.parent.mkdir(parents=True, exist_ok=True)
    connection = sqlite3.connect(path, check_same_thread=False, timeout=30.0)
    try:
        ensure_wal(connection)
        connection.executescript(_SCHEMA)
        yield SqliteBatchStore(connection)
    finally:
        connection.close()
