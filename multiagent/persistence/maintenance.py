"""``ChromaDBMaintenance``: vacuum, backup and compaction of the agent-memory store.

Every operation holds the memory lock exclusively (writers hold it shared), so none runs beside
a write, and reports the store's size before and after and the time it took.

- vacuum: SQLite ``VACUUM`` of ``chroma.sqlite3``, logged in Chroma's ``maintenance_log`` as
  Chroma's own ``chroma vacuum`` does.
- backup: a consistent copy of the persist directory (SQLite through its online-backup API,
  the vector-index files beside it), checked with ``PRAGMA integrity_check``, published by an
  atomic rename; the newest ``profile.memory.backups_kept`` are kept. With an encryption key
  configured every file of the backup is sealed (AES-256-GCM, its key id in the file) before
  the rename; :func:`decrypt_backup` gives back a plain copy to restore from.
- compaction: every agent collection rebuilt from its items (dropping the index's deleted
  slots), segment directories of deleted collections removed, then a vacuum.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from multiagent._crash import crash_point
from multiagent.errors import MultiagentError
from multiagent.persistence._chroma_open import close_persistent_client
from multiagent.persistence._collections import (
    COLLECTION_PREFIX,
    export_items,
    is_staging,
    rebuild_collection,
)
from multiagent.persistence._files import (
    TEMP_PREFIX,
    atomic_write_bytes,
    fsync_directory,
    tree_size,
)
from multiagent.persistence.checkpointer import ensure_home
from multiagent.persistence.crypto import Keyring, configured_keyring
from multiagent.persistence.memory import memory_lock, memory_path, open_chroma_client
from multiagent.policies import Settings

CHROMA_DB = "chroma.sqlite3"
BACKUP_DIR = "backups"
BACKUP_PREFIX = "chroma-"


@dataclass
class MaintenanceReport:
    """What one maintenance operation did."""

    operation: str
    size_before: int
    size_after: int
    seconds: float
    details: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


class ChromaDBMaintenance:
    """Vacuum, back up and compact the Chroma persist directory under ``MULTIAGENT_HOME``.

    Args:
        settings: Resolved settings (data directory, ``profile.memory.backups_kept``).
        lock_timeout_s: How long to wait for writers to finish before giving up.
        keyring: Seals backups (default: the configured key; none means plaintext).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        lock_timeout_s: float = 120.0,
        keyring: Keyring | None = None,
    ) -> None:
        self.settings = settings
        self.keyring = keyring if keyring is not None else configured_keyring()
        self.persist_dir = memory_path(settings)
        self.backup_root = settings.home / BACKUP_DIR
        self.keep = settings.profile.memory.backups_kept
        self.lock = memory_lock(settings)
        self.lock.timeout_s = lock_timeout_s

    def _run(self, operation: str, body: Callable[[], dict[str, Any]]) -> MaintenanceReport:
        ensure_home(self.settings)
        started = time.perf_counter()
        with self.lock.exclusive():
            before = tree_size(self.persist_dir)
            details = body()
            after = tree_size(self.persist_dir)
        return MaintenanceReport(
            operation, before, after, round(time.perf_counter() - started, 4), details
        )

    def _vacuum_db(self) -> dict[str, Any]:
        db = self.persist_dir / CHROMA_DB
        if not db.is_file():
            return {"vacuumed": False, "reason": "no agent memory yet"}
        conn = sqlite3.connect(db, timeout=60.0, isolation_level=None)
        try:
            conn.execute("PRAGMA busy_timeout = 60000")
            conn.execute("VACUUM")
            has_log = conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'maintenance_log'"
            ).fetchone()
            if has_log:
                conn.execute(
                    "INSERT INTO maintenance_log (operation, timestamp) "
                    "VALUES ('vacuum', CURRENT_TIMESTAMP)"
                )
        finally:
            conn.close()
        return {"vacuumed": True, "database": str(db)}

    def vacuum(self) -> MaintenanceReport:
        """``VACUUM`` the Chroma SQLite database."""
        return self._run("vacuum", self._vacuum_db)

    def backups(self) -> list[Path]:
        """Existing backups, oldest first."""
        if not self.backup_root.is_dir():
            return []
        return sorted(
            p for p in self.backup_root.iterdir() if p.is_dir() and p.name.startswith(BACKUP_PREFIX)
        )

    def _copy(self, target: Path) -> None:
        target.mkdir(parents=True)
        for root, _dirs, files in os.walk(self.persist_dir):
            relative = Path(root).relative_to(self.persist_dir)
            (target / relative).mkdir(parents=True, exist_ok=True)
            for name in files:
                source, dest = Path(root) / name, target / relative / name
                if relative == Path(".") and name == CHROMA_DB:
                    _sqlite_copy(source, dest)
                elif not name.endswith("-journal"):
                    shutil.copy2(source, dest)
                    _fsync_file(dest)
            fsync_directory(target / relative)

    def _backup(self, now: datetime | None) -> dict[str, Any]:
        if not (self.persist_dir / CHROMA_DB).is_file():
            return {"backed_up": False, "reason": "no agent memory yet"}
        stamp = (now or datetime.now(UTC)).astimezone(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        self.backup_root.mkdir(parents=True, exist_ok=True)
        # a backup killed before its rename left its staging copy; we hold the lock, so no
        # other backup is writing one now
        for stale in self.backup_root.glob(f"{TEMP_PREFIX}{BACKUP_PREFIX}*"):
            shutil.rmtree(stale, ignore_errors=True)
        final = self.backup_root / f"{BACKUP_PREFIX}{stamp}"
        staging = self.backup_root / f"{TEMP_PREFIX}{BACKUP_PREFIX}{stamp}"
        try:
            self._copy(staging)
            check = _integrity(staging / CHROMA_DB)
            if check != "ok":
                raise MultiagentError(f"backup copy failed its integrity check: {check}")
            if self.keyring.enabled:
                for path in backup_files(staging):
                    atomic_write_bytes(path, self.keyring.seal(path.read_bytes()))
            crash_point("backup-publish")
            staging.rename(final)
            fsync_directory(self.backup_root)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        removed = []
        # the backup just made stays whatever its name: after the clock was set back, older
        # backups carry later times, and the newest must not go first
        others = [b for b in self.backups() if b != final]
        for old in others[: max(0, len(others) - (self.keep - 1))]:
            shutil.rmtree(old)
            removed.append(str(old))
        return {
            "backed_up": True,
            "backup": str(final),
            "backup_bytes": tree_size(final),
            "removed": removed,
            "kept": len(self.backups()),
        }

    def backup(self, *, now: datetime | None = None) -> MaintenanceReport:
        """Copy the persist directory to ``<home>/backups/chroma-<UTC time>``, then prune."""
        return self._run("backup", lambda: self._backup(now))

    def _compact(self) -> dict[str, Any]:
        if not (self.persist_dir / CHROMA_DB).is_file():
            return {"compacted": False, "reason": "no agent memory yet"}
        client = open_chroma_client(self.persist_dir)
        rebuilt: dict[str, int] = {}
        try:
            for collection in client.list_collections():
                name = collection.name
                if not name.startswith(COLLECTION_PREFIX) or is_staging(name):
                    continue
                items = export_items(collection)
                rebuild_collection(client, name, metadata=dict(collection.metadata), items=items)
                rebuilt[name] = len(items)
                crash_point("compact")
            live = {str(s) for s in _segment_ids(self.persist_dir / CHROMA_DB)}
        finally:
            close_persistent_client(client)
        orphans = []
        for entry in self.persist_dir.iterdir():
            if entry.is_dir() and _is_uuid(entry.name) and entry.name not in live:
                shutil.rmtree(entry)
                orphans.append(entry.name)
        return {
            "compacted": True,
            "collections": rebuilt,
            "orphan_segments_removed": orphans,
            **self._vacuum_db(),
        }

    def compact(self) -> MaintenanceReport:
        """Rebuild every agent collection, drop orphaned index files, vacuum."""
        return self._run("compact", self._compact)


def backup_files(backup: Path) -> list[Path]:
    """Every file of a backup directory, in a stable order."""
    return sorted(p for p in backup.rglob("*") if p.is_file())


def decrypt_backup(backup: Path, target: Path, *, keyring: Keyring | None = None) -> int:
    """Copy a backup to ``target`` (a new directory) with every file decrypted.

    The copy is a plain Chroma persist directory: stop writers and put it in place of
    ``<home>/chroma`` to restore. Returns how many files were written.

    Raises:
        UsageError: A file needs a key that is not configured, or fails authentication.
    """
    ring = keyring if keyring is not None else configured_keyring()
    files = backup_files(backup)
    for path in files:
        dest = target / path.relative_to(backup)
        atomic_write_bytes(dest, ring.open(path.read_bytes(), what=f"backup file {path}"))
    return len(files)


def _sqlite_copy(source: Path, dest: Path) -> None:
    src = sqlite3.connect(source, timeout=60.0)
    dst = sqlite3.connect(dest)
    try:
        src.backup(dst)
    finally:
        dst.close()
        src.close()
    _fsync_file(dest)


def _fsync_file(path: Path) -> None:
    with path.open("rb") as handle:
        os.fsync(handle.fileno())


def _integrity(db: Path) -> str:
    conn = sqlite3.connect(db)
    try:
        row = conn.execute("PRAGMA integrity_check").fetchone()
    finally:
        conn.close()
    return str(row[0]) if row else "no answer"


def _segment_ids(db: Path) -> list[str]:
    conn = sqlite3.connect(db, timeout=60.0)
    try:
        return [str(r[0]) for r in conn.execute("SELECT id FROM segments").fetchall()]
    finally:
        conn.close()


def _is_uuid(name: str) -> bool:
    try:
        uuid.UUID(name)
    except ValueError:
        return False
    return True
