"""Temporaries that killed writers left under the data directory: listed, and removed when stale.

A writer killed half-way (a snapshot, a backup, a key rotation) leaves its temporary behind: a
``.tmp-*`` file or directory beside the file it was writing, never a damaged file in its place.
:func:`leftover_temporaries` lists them read-only (``persistence status`` shows them);
:func:`remove_leftovers` (``persistence repair``) removes those at least :data:`STALE_AFTER_S`
old, so a write still under way is never cut short.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from multiagent.persistence._files import TEMP_PREFIX, tree_size

_CHROMA_DIR = "chroma"  # Chroma's own files are Chroma's business

#: A temporary this old is a killed writer's (a snapshot write lasts seconds and a backup's
#: staging directory changes with every file it copies); snapshots use the same age.
STALE_AFTER_S = 3600.0


@dataclass(frozen=True)
class Leftover:
    """A temporary file or directory that a writer left under the data directory."""

    path: Path
    size_bytes: int
    age_s: float

    @property
    def stale(self) -> bool:
        """Whether its writer is surely gone (see :data:`STALE_AFTER_S`)."""
        return self.age_s >= STALE_AFTER_S

    def as_dict(self) -> dict[str, object]:
        """JSON-ready form."""
        return {
            "path": str(self.path),
            "size_bytes": self.size_bytes,
            "age_s": round(self.age_s, 1),
            "stale": self.stale,
        }


def leftover_temporaries(home: Path, *, now: float | None = None) -> list[Leftover]:
    """Every ``.tmp-*`` file or directory under ``home`` (Chroma's own files excepted), read-only.

    Args:
        home: The data directory.
        now: The clock (seconds since the epoch), for tests.
    """
    if not home.is_dir():
        return []
    clock = time.time() if now is None else now
    found = []
    for path in sorted(home.rglob(f"{TEMP_PREFIX}*")):
        if path.relative_to(home).parts[0] == _CHROMA_DIR:
            continue
        try:
            age = clock - path.lstat().st_mtime
            size = tree_size(path)
        except OSError:  # removed by its writer while we looked
            continue
        found.append(Leftover(path, size, max(0.0, age)))
    return [f for f in found if not any(p.path in f.path.parents for p in found)]


def remove_leftovers(home: Path, *, dry_run: bool = False) -> list[dict[str, object]]:
    """Remove the stale temporaries under ``home``; report every temporary found.

    Returns:
        One entry per temporary: :meth:`Leftover.as_dict` and ``action`` (``removed``,
        ``would be removed`` or ``kept: ...`` for one a writer may still be filling).
    """
    report = []
    for leftover in leftover_temporaries(home):
        entry = leftover.as_dict()
        if not leftover.stale:
            entry["action"] = f"kept: younger than {STALE_AFTER_S / 3600:g} h, maybe still written"
        elif dry_run:
            entry["action"] = "would be removed"
        else:
            if leftover.path.is_dir():
                shutil.rmtree(leftover.path, ignore_errors=True)
            else:
                leftover.path.unlink(missing_ok=True)
            entry["action"] = "removed"
        report.append(entry)
    return report


__all__ = ["STALE_AFTER_S", "Leftover", "leftover_temporaries", "remove_leftovers"]
