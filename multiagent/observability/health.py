"""``/healthz``: checks what it names, so a failing data directory is a failing probe.

- ``home``: the data directory exists (or can be made) and a file can be written in it;
- ``databases``: every SQLite database present under it (checkpoints, metrics history, live
  runs) opens and answers a query; the PostgreSQL checkpointer when one is configured;
- ``scheduler``: when a persistence scheduler is recorded as running, it is alive and its
  heartbeat (the latest task run, every 5 minutes for the metrics task) is recent. No
  scheduler at all is not a failure (it is optional), a dead or silent one is.
"""

from __future__ import annotations

import sqlite3
import time
from contextlib import closing
from datetime import datetime
from pathlib import Path
from typing import Any

from multiagent.errors import UsageError
from multiagent.persistence.health import read_only_uri
from multiagent.policies import Settings

#: Three missed 5-minute metrics runs and the scheduler counts as silent.
HEARTBEAT_STALE_S = 15 * 60
_DATABASES = ("checkpoints.sqlite", "metrics.sqlite", "runs.sqlite")


def _home(settings: Settings) -> dict[str, Any]:
    from multiagent.persistence.checkpointer import ensure_home

    try:
        ensure_home(settings)
    except UsageError as exc:
        return {"ok": False, "error": str(exc)}
    return {"ok": True}


def _databases(settings: Settings) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for path in sorted(Path(settings.home).glob("*.sqlite")):
        if path.name not in _DATABASES:
            continue
        try:
            # read-only, creating nothing beside the file: a probe leaves a damaged one as it is
            uri = read_only_uri(path.resolve())
            with closing(sqlite3.connect(uri, uri=True, timeout=5.0)) as conn:
                conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
            found[path.name] = "ok"
        except sqlite3.Error as exc:
            found[path.name] = f"error: {exc}"
    if settings.checkpoint_url:
        found["checkpoint_url"] = _postgres(settings.checkpoint_url)
    return {"ok": all(v == "ok" for v in found.values()), "checked": found}


def _postgres(url: str) -> str:
    try:
        import psycopg

        with psycopg.connect(url, connect_timeout=5) as conn:
            conn.execute("SELECT 1")
    except Exception as exc:  # any driver error is the probe's answer, on one line
        return f"error: {type(exc).__name__}"
    return "ok"


def _scheduler(settings: Settings, *, now: float) -> dict[str, Any]:
    from multiagent.persistence.scheduler_state import STATE_FILE, SchedulerState, scheduler_running

    record = SchedulerState(Path(settings.home) / STATE_FILE).load()
    info = record.get("scheduler") or {}
    if not info or info.get("stopped_at"):
        return {"ok": True, "state": "not running"}
    if not scheduler_running(record):
        return {"ok": False, "state": "died", "pid": info.get("pid")}
    stamps = [info.get("started_at")] + [t.get("last_run") for t in record["tasks"].values()]
    latest = max(datetime.fromisoformat(s).timestamp() for s in stamps if s)
    age = round(now - latest, 1)
    return {"ok": age <= HEARTBEAT_STALE_S, "state": "running", "heartbeat_age_s": age}


def health(settings: Settings, *, now: float | None = None) -> dict[str, Any]:
    """Every check and the overall ``status`` (``ok`` or ``failing``).

    Args:
        settings: Resolved settings (the data directory, the checkpoint URL).
        now: Unix time (tests); default: the current time.
    """
    moment = time.time() if now is None else now
    checks = {
        "home": _home(settings),
        "databases": _databases(settings),
        "scheduler": _scheduler(settings, now=moment),
    }
    ok = all(check["ok"] for check in checks.values())
    return {"status": "ok" if ok else "failing", "home": str(settings.home), "checks": checks}
