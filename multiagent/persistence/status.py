"""One report of everything persistence holds: memory, snapshots, backups, checkpoints, schedule.

Read-only: it creates nothing in a fresh data directory and takes no lock, so it answers while
the scheduler works.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime
from pathlib import Path
from typing import Any

from multiagent.persistence._collections import COLLECTION_PREFIX, is_staging
from multiagent.persistence._files import tree_size
from multiagent.persistence.checkpointer import checkpoint_path
from multiagent.persistence.maintenance import ChromaDBMaintenance
from multiagent.persistence.memory import memory_path, open_chroma_client
from multiagent.persistence.scheduler import MemoryPersistenceScheduler
from multiagent.persistence.scheduler_state import STATE_FILE, SchedulerState, scheduler_running
from multiagent.persistence.snapshots import MemorySnapshot
from multiagent.policies import Settings


def memory_report(settings: Settings) -> dict[str, Any]:
    """Agents with a memory and how many items each holds, and the store's size."""
    path = memory_path(settings)
    agents: dict[str, int] = {}
    if (path / "chroma.sqlite3").is_file():
        client = open_chroma_client(path)
        try:
            for collection in client.list_collections():
                agent = (collection.metadata or {}).get("agent")
                if (
                    collection.name.startswith(COLLECTION_PREFIX)
                    and not is_staging(collection.name)
                    and isinstance(agent, str)
                ):
                    agents[agent] = int(collection.count())
        finally:
            client.close()
    return {
        "path": str(path),
        "size_bytes": tree_size(path),
        "agents": dict(sorted(agents.items())),
    }


def snapshot_report(settings: Settings) -> dict[str, Any]:
    """Snapshots per agent: how many, their sizes, the newest."""
    snapper = MemorySnapshot(settings)
    per_agent: dict[str, dict[str, Any]] = {}
    for info in snapper.list_snapshots():
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
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30.0)
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
    zone = timezone or record["scheduler"].get("timezone") or "UTC"
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
    }
