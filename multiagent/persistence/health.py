"""Damaged databases in the data directory: which file, why, and how to recover.

Every SQLite file under ``MULTIAGENT_HOME`` is one of two kinds:

- **derived** data that the project rebuilds by itself (the metrics history, the completion and
  analysis caches): ``multiagent persistence repair`` moves a damaged one aside (to
  ``<name>.damaged-<time>``) and the next command starts it afresh;
- **kept** data (checkpoints, agent memory, budgets, batches): only a copy can bring it back.
  Agent memory comes back from the newest Chroma backup (``persistence repair`` does that when
  a backup exists); the others from a backup of the data directory.

Checking is read-only: files are opened with SQLite's ``immutable`` URI flag, so no journal,
no ``-wal`` or ``-shm`` file is created and nothing under the home changes. A file with a
rollback journal beside it (its writer was killed mid-transaction, or is writing now) holds
pages that are not committed until the journal is rolled back, which ``immutable`` ignores: such
a file is read through a rolled-back copy outside the home (:func:`committed_view`), never
called damaged for what the journal undoes.

Temporaries of killed writers are the other thing ``repair`` cleans:
see :mod:`multiagent.persistence.leftovers`.
"""

from __future__ import annotations

import shutil
import sqlite3
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from multiagent.errors import DamagedStoreError

_HEADER = b"SQLite format 3\x00"
_SUFFIXES = (".sqlite", ".sqlite3", ".db")
#: Files whose content the project rebuilds by itself, by name or by directory.
_DERIVED_NAMES = ("metrics.sqlite",)
_DERIVED_DIRS = ("cache",)
_MEMORY_DB = ("chroma", "chroma.sqlite3")
#: Where the stores keep their databases (backups and snapshots are copies, checked on restore).
_PLACES = ("*.sqlite", "*.sqlite3", "*.db", "chroma/chroma.sqlite3", "cache/*/*/*.db")


@dataclass(frozen=True)
class Damage:
    """One damaged database file."""

    path: Path
    reason: str
    derived: bool

    def recovery(self, home: Path) -> str:
        """How to recover from it, as a sentence."""
        if self.derived:
            return "its data is rebuilt: run `multiagent persistence repair` to start it afresh"
        if self.path.parts[-2:] == _MEMORY_DB:
            if newest_chroma_backup(home) is not None:
                return "run `multiagent persistence repair` to restore the newest Chroma backup"
            return (
                "no Chroma backup exists: move the memory directory aside (agent memory is "
                "lost) or restore it from a copy of the data directory"
            )
        return "restore it from a backup of the data directory, or move it aside (its data is lost)"


def _sqlite_files(home: Path) -> Iterator[Path]:
    if not home.is_dir():
        return
    for pattern in _PLACES:
        for path in sorted(home.glob(pattern)):
            if path.suffix in _SUFFIXES and path.is_file():
                yield path


def check_sqlite_file(path: Path, *, thorough: bool = True) -> str | None:
    """Why ``path`` is not a sound SQLite database, or ``None`` when it is (read-only).

    Args:
        path: The file.
        thorough: Also run SQLite's ``quick_check`` (reads every page); else only the header
            and the size are checked, which costs one small read.
    """
    try:
        with path.open("rb") as handle:
            header = handle.read(100)
        size = path.stat().st_size
    except OSError as exc:
        return f"cannot be read: {exc.strerror or exc}"
    if size == 0:
        return None  # SQLite's own empty database
    if len(header) < 100 or not header.startswith(_HEADER):
        return "not an SQLite database"
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    pages = int.from_bytes(header[28:32], "big")
    header_valid = header[24:28] == header[92:96]
    # until a pending rollback journal is rolled back, the header and the size may be mid-write
    too_short = header_valid and size < pages * page_size
    if not _pending(_journal(path)) and (page_size < 512 or size % page_size or too_short):
        return f"truncated ({size} bytes; the header counts {pages} pages of {page_size})"
    if not thorough:
        return None
    with committed_view(path, plain=f"file:{quote(str(path))}?immutable=1") as uri:
        return _quick_check(uri)


def _quick_check(uri: str) -> str | None:
    """SQLite's ``quick_check`` of the file at ``uri``: ``None`` when sound, else its first line."""
    try:
        conn = sqlite3.connect(uri, uri=True)
        try:
            result = conn.execute("PRAGMA quick_check").fetchone()
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        return str(exc)
    if result and result[0] == "ok":
        return None
    lines = [line.strip("* ") for line in str(result[0] if result else "").splitlines()]
    found = [line for line in lines if line and line != "in database main"]
    more = f" (and {len(found) - 1} more problems)" if len(found) > 1 else ""
    return f"integrity check: {found[0] if found else 'no answer'}{more}"


def _journal(path: Path) -> Path:
    return path.with_name(path.name + "-journal")


def _pending(journal: Path) -> bool:
    """Whether the rollback journal ``journal`` holds pages a killed or running writer changed."""
    try:
        with journal.open("rb") as handle:
            return any(handle.read(8))  # empty, or zeroed by journal_mode=PERSIST: nothing
    except OSError:
        return False


@contextmanager
def committed_view(path: Path, *, plain: str | None = None) -> Iterator[str]:
    """An SQLite URI that reads ``path`` as last committed, changing nothing beside it.

    Without a pending rollback journal this is ``plain`` (default :func:`read_only_uri`).
    With one, the file may
    hold a transaction's uncommitted pages (``immutable`` would read them, ``mode=ro`` cannot
    roll them back): the file and its journal are copied to a temporary directory, and SQLite
    rolls the copy back when it is read.
    """
    journal = _journal(path)
    if not _pending(journal):
        yield plain if plain is not None else read_only_uri(path)
        return
    with tempfile.TemporaryDirectory(prefix="multiagent-read-") as scratch:
        copy = Path(scratch) / path.name
        for _attempt in range(5):
            shutil.copyfile(path, copy)  # the file first: the journal only grows meanwhile
            try:
                shutil.copyfile(journal, _journal(copy))
                break
            except FileNotFoundError:  # its writer committed between the copies: copy again
                continue
        yield f"file:{quote(str(copy))}"


def read_only_uri(path: Path) -> str:
    """An SQLite URI that reads ``path`` and creates nothing beside it.

    ``mode=ro`` on a WAL database whose ``-wal`` file is absent creates ``-wal`` and ``-shm``
    (and, read-only, cannot remove them again). With no ``-wal`` file no connection has it open
    and nothing is waiting to be checkpointed, so the file is read as ``immutable``; else
    ``mode=ro`` shares the existing ``-wal`` and ``-shm`` with the writers.
    """
    wal = path.with_name(path.name + "-wal")
    flag = "mode=ro" if wal.exists() else "immutable=1"
    return f"file:{quote(str(path))}?{flag}"


def _is_derived(home: Path, path: Path) -> bool:
    relative = path.relative_to(home).parts
    return path.name in _DERIVED_NAMES or relative[0] in _DERIVED_DIRS


def find_damaged(home: Path, *, thorough: bool = True) -> list[Damage]:
    """Every damaged database under ``home`` (backups and snapshots not included).

    Args:
        home: The data directory.
        thorough: Read every page (see :func:`check_sqlite_file`); else headers and sizes only.
    """
    found = []
    for path in _sqlite_files(home):
        reason = check_sqlite_file(path, thorough=thorough)
        if reason is not None:
            found.append(Damage(path, reason, _is_derived(home, path)))
    return found


def damaged_store_error(home: Path | None, *, detail: str) -> DamagedStoreError:
    """The one-line error for a database failure: the damaged file and how to recover."""
    damaged = find_damaged(home) if home is not None else []
    if not damaged:
        where = f"in {home} " if home is not None else ""
        return DamagedStoreError(
            f"a database {where}cannot be read ({detail}); "
            "run `multiagent persistence repair --check` to find which"
        )
    first = damaged[0]
    more = f" (and {len(damaged) - 1} more)" if len(damaged) > 1 else ""
    return DamagedStoreError(
        f"damaged database {first.path}{more}: {first.reason}; {first.recovery(home or Path())}"
    )


def refuse_damaged(home: Path) -> None:
    """Raise the one-line error when a database under ``home`` is visibly damaged (a header or
    size check, cheap enough for every command), before a command writes anything."""
    damaged = find_damaged(home, thorough=False)
    if damaged:
        raise damaged_store_error(home, detail=damaged[0].reason)


def newest_chroma_backup(home: Path) -> Path | None:
    """The newest complete Chroma backup under ``home``, if any."""
    from multiagent.persistence.maintenance import BACKUP_DIR, BACKUP_PREFIX

    root = home / BACKUP_DIR
    if not root.is_dir():
        return None
    backups = sorted(
        p
        for p in root.iterdir()
        if p.is_dir() and p.name.startswith(BACKUP_PREFIX) and (p / _MEMORY_DB[1]).is_file()
    )
    return backups[-1] if backups else None


def _aside(path: Path, stamp: str) -> Path:
    target = path.with_name(f"{path.name}.damaged-{stamp}")
    path.rename(target)
    for suffix in ("-wal", "-shm", "-journal"):  # a journal belongs to the file it journals
        companion = path.with_name(path.name + suffix)
        if companion.exists():
            companion.rename(target.with_name(target.name + suffix))
    return target


def _restore_memory(directory: Path, backup: Path, stamp: str) -> Path:
    """Put a plain copy of ``backup`` in place of ``directory``; return where that went.

    The copy is made beside it first, each file decrypted when the backup is sealed (a key
    that is not configured stops here, before anything moved), then swapped in by renames.
    """
    from multiagent.persistence._files import TEMP_PREFIX
    from multiagent.persistence.maintenance import decrypt_backup

    staging = directory.with_name(f"{TEMP_PREFIX}{directory.name}-restore-{stamp}")
    try:
        decrypt_backup(backup, staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    moved = directory.with_name(f"{directory.name}.damaged-{stamp}")
    directory.rename(moved)
    staging.rename(directory)
    return moved


def repair(home: Path, *, dry_run: bool = False) -> list[dict[str, str]]:
    """Repair what can be repaired under ``home``; report every damaged file.

    Derived files are moved aside; damaged agent memory is moved aside and replaced by a copy of
    the newest Chroma backup. Kept data without a backup is left as it is.

    Args:
        home: The data directory.
        dry_run: Only report (what ``--check`` shows).

    Returns:
        One entry per damaged file: ``path``, ``reason``, ``action`` (``moved aside``,
        ``restored from <backup>``, ``left``, or ``would ...``) and ``recovery``.
    """
    stamp = time.strftime("%Y%m%dT%H%M%S")
    report = []
    for damage in find_damaged(home):
        entry = {"path": str(damage.path), "reason": damage.reason}
        backup = newest_chroma_backup(home)
        memory = damage.path.parts[-2:] == _MEMORY_DB
        if damage.derived:
            action = "moved aside"
            if not dry_run:
                entry["moved_to"] = str(_aside(damage.path, stamp))
        elif memory and backup is not None:
            action = f"restored from {backup}"
            if not dry_run:
                entry["moved_to"] = str(_restore_memory(damage.path.parent, backup, stamp))
        else:
            action = "left"
        entry["action"] = f"would be {action}" if dry_run and action != "left" else action
        entry["recovery"] = damage.recovery(home)
        report.append(entry)
    return report


__all__ = [
    "Damage",
    "check_sqlite_file",
    "committed_view",
    "damaged_store_error",
    "find_damaged",
    "newest_chroma_backup",
    "read_only_uri",
    "refuse_damaged",
    "repair",
]
