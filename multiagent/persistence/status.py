"""One report of everything persistence holds: memory, snapshots, backups, checkpoints, schedule,
and the temporaries a killed writer left.

Read-only: it creates nothing in a fresh data directory and takes no lock, so it answers while
the scheduler works.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime
from pathlib import Path
from typing import Any

from multiagent.errors import UsageError
from multiagent.persistence._collections import COLLECTION_PREFIX, is_staging
from multiagent.persistence._files import tree_size
from multiagent.persistence._snapshot_format import read_header
from multiagent.persistence.checkpointer import checkpoint_path
from multiagent.persistence.health import committed_view
from multiagent.persistence.leftovers import leftover_temporaries
from multiagent.persistence.maintenance import ChromaDBMaintenance
from multiagent.persistence.memory import memory_path
from multiagent.persistence.scheduler import MemoryPersistenceScheduler
from multiagent.persistence.scheduler_state import STATE_FILE, SchedulerState, scheduler_running
from multiagent.persistence.snapshots import MemorySnapshot, SnapshotInfo, snapshot_info
from multiagent.policies import Settings

_AGENT_COUNTS = """
SELECT c.name, m.str_value, (
    SELECT count(*) FROM embeddings e JOIN segments s ON s.id = e.segment_id
    WHERE s.collection = c.id AND s.scope = 'METADATA'
)
FROM collections c JOIN collection_metadata m ON m.collection_id = c.id AND m.key = 'agent'
"""


def _chroma_counts(database: Path) -> tuple[dict[str, int], list[str]]:
    """Items per agent and the staging collections of an interrupted rebuild, read-only.

    Chroma's client is not opened: opening it rewrites its SQLite file and the vector segments'
    headers, and ``status`` promises to leave every byte as it was. Its SQLite file is read
    as last committed instead (see :func:`~multiagent.persistence.health.committed_view`).
    """
    with committed_view(database) as uri:
        conn = sqlite3.connect(uri, uri=True, timeout=30.0)
        try:
            tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
            if not {"collections", "collection_metadata", "segments", "embeddings"} <= tables:
                return {}, []  # an empty file: Chroma has not created its schema yet
            rows = conn.execute(_AGENT_COUNTS).fetchall()
        finally:
            conn.close()
    agents: dict[str, int] = {}
    staging = []
    for name, agent, count in rows:
        if not str(name).startswith(COLLECTION_PREFIX) or not isinstance(agent, str):
            continue
        if is_staging(str(name)):
            staging.append(str(name))
        else:
            agents[agent] = int(count)
    return agents, sorted(staging)


def memory_report(settings: Settings) -> dict[str, Any]:
    """Agents with a memory and how many items each holds, and the store's size.

    ``staging`` lists collections a killed rebuild or restore left; the next command that opens
    agent memory finishes or discards them (the agent's previous collection stands until then).
    """
    path = memory_path(settings)
    database = path / "chroma.sqlite3"
    agents, staging = _chroma_counts(database) if database.is_file() else ({}, [])
    return {
        "path": str(path),
        "size_bytes": tree_size(path),
        "agents": dict(sorted(agents.items())),
        "staging": staging,
    }


def snapshot_report(settings: Settings) -> dict[str, Any]:
    """Snapshots per agent: how many, their sizes, the newest.

    A file whose header cannot be read (truncated, damaged, or sealed with a key that is not
    configured) is listed under ``unreadable`` with the reason, not left out: it is on disk,
    counts towards the retention limit, and a restore from it would fail.
    """
    snapper = MemorySnapshot(settings)
    per_agent: dict[str, dict[str, Any]] = {}
    infos: list[SnapshotInfo] = []
    unreadable: list[dict[str, Any]] = []
    for path in snapper.files():
        try:
            infos.append(snapshot_info(path, read_header(path, keyring=snapper.keyring)))
        except UsageError as exc:
            size = path.stat().st_size
            unreadable.append({"path": str(path), "size_bytes": size, "error": str(exc)})
    for info in infos:
        entry = per_agent.setdefault(info.agent, {"count": 0, "total_bytes": 0, "files": []})
        entry["count"] += 1
        entry["total_bytes"] += info.size_bytes
        entry["latest"] = info.created_at
        entry["files"].append(
            {
                "path": str(info.path),
                "created_at": info.created_at,
                "items": info.item_count,
                "size_bytes": info.size_bytes,
            }
        )
    return {
        "path": str(snapper.root),
        "keep_per_agent": snapper.keep,
        "agents": dict(sorted(per_agent.items())),
        "unreadable": unreadable,
    }


def backup_report(settings: Settings) -> dict[str, Any]:
    """Chroma backups: how many, total size, the newest."""
    maintenance = ChromaDBMaintenance(settings)
    backups = maintenance.backups()
    return {
        "path": str(maintenance.backup_root),
        "keep": maintenance.keep,
        "count": len(backups),
        "total_bytes": sum(tree_size(b) for b in backups),
        "latest": str(backups[-1]) if backups else None,
    }


def _sqlite_counts(path: Path) -> tuple[int, int]:
    if not path.is_file():
        return 0, 0
    with committed_view(path) as uri:
        conn = sqlite3.connect(uri, uri=True, timeout=30.0)
        try:
            exists = conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'checkpoints'"
            ).fetchone()
            if not exists:
                return 0, 0
            threads, checkpoints = conn.execute(
                "SELECT count(DISTINCT thread_id), count(*) FROM checkpoints"
            ).fetchone()
        finally:
            conn.close()
    return int(threads), int(checkpoints)


def checkpoint_report(settings: Settings) -> dict[str, Any]:
    """The checkpoint database: backend, where, size, threads and checkpoints."""
    url = settings.checkpoint_url
    if url and url.startswith(("postgresql://", "postgres://")):
        from multiagent.persistence.postgres import postgres_report

        return postgres_report(url)
    path = checkpoint_path(settings)
    threads, checkpoints = _sqlite_counts(path)
    files = [path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")]
    return {
        "backend": "sqlite",
        "location": str(path),
        "size_bytes": sum(p.stat().st_size for p in files if p.exists()),
        "threads": threads,
        "checkpoints": checkpoints,
    }


def persistence_status(
    settings: Settings, *, timezone: str | None = None, now: datetime | None = None
) -> dict[str, Any]:
    """Everything ``multiagent persistence status`` shows, as JSON-ready data.

    Args:
        settings: Resolved settings.
        timezone: Zone of the schedule; default the running scheduler's, else UTC.
        now: The clock, for tests.
    """
    record = SchedulerState(settings.home / STATE_FILE).load()
    zone = timezone if timezone is not None else record["scheduler"].get("timezone") or "UTC"
    scheduler = MemoryPersistenceScheduler(settings, timezone=zone)
    schedule = scheduler.status(now)
    schedule["running"] = scheduler_running(record)
    return {
        "home": str(settings.home),
        "memory": memory_report(settings),
        "snapshots": snapshot_report(settings),
        "backups": backup_report(settings),
        "checkpoints": checkpoint_report(settings),
        "schedule": schedule,
        "leftovers": [item.as_dict() for item in leftover_temporaries(settings.home)],
    }
