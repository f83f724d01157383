"""``rotate_key``: seal everything stored at rest with a new key, resumably.

Everything means: the checkpoint blobs (SQLite ``checkpoints`` and ``writes``, or PostgreSQL
``checkpoint_blobs`` and ``checkpoint_writes``), every memory snapshot and every file of every
Chroma backup. Plaintext found on the way (written before a key was set) is sealed too.

Safe to kill at any point: each blob names the key that sealed it, each file is replaced
atomically (temporary file, fsync, rename) and each batch of rows is one transaction, so every
blob is whole under the old key or whole under the new one. A rerun with the same keys skips
what is done. Until the run finishes, keep the old key configured (``MULTIAGENT_ENCRYPTION_KEY``)
and give the new one (``--new-key-file``); then configure the new key.

Before changing anything, every blob's key id is checked: a blob sealed with a key that is
neither the old nor the new one stops the rotation with one line, nothing changed.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol, cast

from multiagent._crash import crash_point
from multiagent.persistence._files import TEMP_PREFIX, atomic_write_bytes
from multiagent.persistence.checkpointer import checkpoint_path
from multiagent.persistence.crypto import (
    CIPHER_PREFIX,
    DataKey,
    Keyring,
    checkpoint_key_id,
    sealed_key_id,
)
from multiagent.persistence.maintenance import BACKUP_DIR, BACKUP_PREFIX, backup_files
from multiagent.policies import Settings

BATCH_ROWS = 64
_HEAD_BYTES = 64


@dataclass(frozen=True)
class _Table:
    """A table of serialized blobs: its type and blob columns and its row key."""

    name: str
    type_col: str
    blob_col: str
    key_cols: tuple[str, ...]


SQLITE_TABLES = (
    _Table("checkpoints", "type", "checkpoint", ("rowid",)),
    _Table("writes", "type", "value", ("rowid",)),
)
POSTGRES_TABLES = (
    _Table(
        "checkpoint_blobs", "type", "blob", ("thread_id", "checkpoint_ns", "channel", "version")
    ),
    _Table(
        "checkpoint_writes",
        "type",
        "blob",
        ("thread_id", "checkpoint_ns", "checkpoint_id", "task_id", "idx"),
    ),
)


@dataclass
class RotationReport:
    """What a rotation did: blobs re-sealed and blobs found already under the new key."""

    new_key_id: str
    old_key_id: str | None
    rotated: dict[str, int] = field(default_factory=dict)
    already: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


class _Connection(Protocol):
    def execute(self, sql: str, params: Sequence[Any] = ..., /) -> Any: ...
    def commit(self) -> None: ...


def _reseal_typed(keyring: Keyring, type_name: str, blob: bytes) -> tuple[str, bytes]:
    """A checkpoint blob (``type``, bytes) sealed again with the keyring's primary key."""
    cipher = keyring.cipher()
    base, _, sealed_with = type_name.partition("+")
    plaintext = cipher.decrypt(sealed_with, blob) if sealed_with else blob
    name, sealed = cipher.encrypt(plaintext)
    return f"{base}+{name}", sealed


class _RowStore:
    """The checkpoint blobs of one database, SQLite or PostgreSQL."""

    def __init__(self, conn: _Connection, tables: Sequence[_Table], *, mark: str) -> None:
        self.conn, self.tables, self.mark = conn, tables, mark

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[Sequence[Any]]:
        return list(self.conn.execute(sql, params).fetchall())

    def key_ids(self) -> set[str | None]:
        """Every key id (``None``: plaintext) a blob of these tables names."""
        found: set[str | None] = set()
        for t in self.tables:
            rows = self._rows(
                f"SELECT DISTINCT {t.type_col} FROM {t.name} WHERE {t.blob_col} IS NOT NULL"
            )
            found |= {checkpoint_key_id(r[0]) for r in rows if r[0] is not None}
        return found

    def rotate(self, keyring: Keyring, report: RotationReport, label: str) -> None:
        """Re-seal every blob not already under the primary key, a batch per transaction."""
        done = f"%+{CIPHER_PREFIX}{report.new_key_id}"
        m = self.mark
        report.rotated.setdefault(label, 0)
        for t in self.tables:
            keys = ", ".join(t.key_cols)
            where = " AND ".join(f"{c} = {m}" for c in t.key_cols)
            todo = self._rows(
                f"SELECT {keys} FROM {t.name} WHERE {t.blob_col} IS NOT NULL "
                f"AND {t.type_col} IS NOT NULL AND {t.type_col} NOT LIKE {m}",
                (done,),
            )
            already = self._rows(
                f"SELECT count(*) FROM {t.name} WHERE {t.type_col} LIKE {m}", (done,)
            )
            report.already[label] = report.already.get(label, 0) + int(already[0][0])
            for start in range(0, len(todo), BATCH_ROWS):
                for key in todo[start : start + BATCH_ROWS]:
                    row = self._rows(
                        f"SELECT {t.type_col}, {t.blob_col} FROM {t.name} WHERE {where}", key
                    )
                    if not row or checkpoint_key_id(row[0][0]) == report.new_key_id:
                        continue  # gone, or sealed meanwhile by a writer with the new key
                    new_type, sealed = _reseal_typed(keyring, str(row[0][0]), bytes(row[0][1]))
                    self.conn.execute(
                        f"UPDATE {t.name} SET {t.type_col} = {m}, {t.blob_col} = {m} WHERE {where}",
                        (new_type, sealed, *key),
                    )
                    report.rotated[label] = report.rotated.get(label, 0) + 1
                self.conn.commit()
                crash_point("rotate-key")


def _sealed_files(settings: Settings) -> dict[str, list[Path]]:
    from multiagent.persistence.snapshots import SUFFIX, snapshot_root

    snapshots = sorted(
        p
        for p in snapshot_root(settings).rglob(f"*{SUFFIX}")
        if p.is_file() and not p.name.startswith(TEMP_PREFIX)
    )
    root = settings.home / BACKUP_DIR
    backups = [
        f
        for b in sorted(root.glob(f"{BACKUP_PREFIX}*"))
        if b.is_dir()
        for f in backup_files(b)
        if not f.name.startswith(TEMP_PREFIX)
    ]
    return {"snapshots": snapshots, "backups": backups}


def _head(path: Path) -> bytes:
    with path.open("rb") as handle:
        return handle.read(_HEAD_BYTES)


@contextmanager
def _row_store(settings: Settings) -> Iterator[_RowStore | None]:
    """The checkpoint database's blobs, ``None`` when there is no database yet."""
    url = settings.checkpoint_url
    if url and url.startswith(("postgresql://", "postgres://")):
        from psycopg.rows import tuple_row

        from multiagent.persistence.postgres import connect

        with connect(url) as pg:
            plain = cast("Any", pg)  # the rows as tuples, as sqlite3 gives them
            plain.row_factory = tuple_row
            present = plain.execute("SELECT to_regclass('checkpoint_blobs') IS NOT NULL").fetchone()
            pg.autocommit = False
            yield _RowStore(plain, POSTGRES_TABLES, mark="%s") if present and present[0] else None
        return
    db = checkpoint_path(settings)
    if not db.is_file():
        yield None
        return
    with closing(sqlite3.connect(db, timeout=30.0)) as conn:
        yield _RowStore(conn, SQLITE_TABLES, mark="?")


def rotate_key(settings: Settings, *, new_key: DataKey, old_key: DataKey | None) -> RotationReport:
    """Seal every checkpoint blob, snapshot and backup file with ``new_key``.

    Args:
        settings: Resolved settings: the data directory and the checkpoint URL.
        new_key: The key everything is sealed with from now on.
        old_key: The key the data is sealed with now (``None``: it is plaintext).

    Raises:
        UsageError: Some blob is sealed with a key that is neither; nothing was changed.
    """
    keyring = Keyring(new_key, also=(old_key,) if old_key is not None else ())
    report = RotationReport(
        new_key_id=new_key.key_id, old_key_id=old_key.key_id if old_key else None
    )
    files = _sealed_files(settings)
    for label, paths in files.items():
        for path in paths:
            key_id = sealed_key_id(_head(path))
            if key_id is not None:
                keyring._key(key_id, f"{label[:-1]} file {path}")  # refuses an unknown key
    with _row_store(settings) as rows:
        if rows is not None:
            for key_id in rows.key_ids():
                if key_id is not None:
                    keyring._key(key_id, "a checkpoint")
            rows.rotate(keyring, report, "checkpoints")
    for label, paths in files.items():
        report.rotated[label] = report.already[label] = 0
        for path in paths:
            data = path.read_bytes()
            if sealed_key_id(data) == new_key.key_id:
                report.already[label] += 1
                continue
            opened = keyring.open(data, what=f"{label[:-1]} file {path}")
            atomic_write_bytes(path, keyring.seal(opened))
            report.rotated[label] += 1
            crash_point("rotate-key")
    return report
