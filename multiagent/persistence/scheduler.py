"""``MemoryPersistenceScheduler``: snapshots, vacuum, backups, compaction and metrics on time.

Built on APScheduler 3 (``BackgroundScheduler``); the schedule is in
:mod:`multiagent.persistence.schedule`. Every run is wrapped: a task that raises is logged with
its traceback, recorded (last error, failure count) and simply runs again at its next time; it
never stops the scheduler. Last run, next run and last error of every task are persisted in
``<home>/scheduler.json`` (:mod:`multiagent.persistence.scheduler_state`).

The metrics task calls a hook the observability part supplies (``metrics_hook``); without one
it records ``skipped``.
"""

from __future__ import annotations

import fcntl
import functools
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any

from apscheduler.events import EVENT_JOB_MISSED, JobEvent
from apscheduler.schedulers.background import BackgroundScheduler

from multiagent.errors import MultiagentError, UsageError
from multiagent.observability.live_starts import runs_held
from multiagent.persistence.checkpointer import ensure_home
from multiagent.persistence.maintenance import ChromaDBMaintenance
from multiagent.persistence.pruning import prune_checkpoints
from multiagent.persistence.schedule import (
    TASK_NAMES,
    build_triggers,
    next_fire_time,
    resolve_timezone,
)
from multiagent.persistence.scheduler_state import STATE_FILE, SchedulerState, scheduler_running
from multiagent.persistence.snapshots import MemorySnapshot
from multiagent.policies import Settings

logger = logging.getLogger("multiagent.persistence.scheduler")

#: Held (``flock``) by the process whose scheduler runs, so a home has one scheduler at a time.
LOCK_FILE = "scheduler.lock"

Task = Callable[[], Any]


def default_tasks(settings: Settings, *, metrics_hook: Task | None = None) -> dict[str, Task]:
    """The tasks the scheduler runs, by name.

    ``vacuum`` prunes the checkpoint database (ending in its own ``VACUUM``) and vacuums the
    Chroma database.
    """

    def snapshots() -> Any:
        with MemorySnapshot(settings) as snapper:
            taken = snapper.take_all()
        return {"snapshots": [str(info.path) for info in taken], "agents": len(taken)}

    def vacuum() -> Any:
        # a thread another process runs now keeps its checkpoints (see prune_checkpoints)
        pruned = prune_checkpoints(settings, running=functools.partial(runs_held, settings))
        chroma = ChromaDBMaintenance(settings).vacuum()
        return {"checkpoints": pruned.as_dict(), "chroma": chroma.as_dict()}

    def backups() -> Any:
        return ChromaDBMaintenance(settings).backup().as_dict()

    def compaction() -> Any:
        return ChromaDBMaintenance(settings).compact().as_dict()

    def metrics() -> Any:
        if metrics_hook is None:
            raise _Skipped("no metrics hook installed")
        return metrics_hook()

    return {
        "snapshots": snapshots,
        "vacuum": vacuum,
        "backups": backups,
        "compaction": compaction,
        "metrics": metrics,
    }


class _Skipped(Exception):
    """A task that had nothing to do."""


class MemoryPersistenceScheduler:
    """Run the memory-persistence tasks on their schedule, recording every run.

    Args:
        settings: Resolved settings (data directory, ``profile.memory``).
        timezone: IANA name (or tzinfo) the wall-clock tasks follow; default UTC.
        metrics_hook: Called every 5 minutes to persist metrics (observability plugs in).
        tasks: Replace tasks by name (e.g. a custom backup); names must be known ones.
        triggers: Replace APScheduler triggers by task name (a custom schedule).
        state: Where runs are recorded; default ``<home>/scheduler.json``.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        timezone: str | tzinfo = "UTC",
        metrics_hook: Task | None = None,
        tasks: Mapping[str, Task] | None = None,
        triggers: Mapping[str, Any] | None = None,
        state: SchedulerState | None = None,
    ) -> None:
        self.settings = settings
        self.zone = resolve_timezone(timezone)
        self.timezone_name = str(timezone) if isinstance(timezone, str) else str(self.zone)
        unknown = sorted((set(tasks or {}) | set(triggers or {})) - set(TASK_NAMES))
        if unknown:
            raise UsageError(f"unknown task {unknown[0]!r}; valid: {', '.join(TASK_NAMES)}")
        self.triggers = {**build_triggers(settings, timezone=self.zone), **(triggers or {})}
        self.tasks = {**default_tasks(settings, metrics_hook=metrics_hook), **(tasks or {})}
        self.state = state or SchedulerState(settings.home / STATE_FILE)
        self._scheduler: BackgroundScheduler | None = None
        self._lock_fd: int | None = None

    def next_runs(self, now: datetime | None = None) -> dict[str, datetime | None]:
        """When each task runs next after ``now`` (default: the current time)."""
        moment = now or datetime.now(UTC)
        return {name: next_fire_time(self.triggers[name], moment) for name in TASK_NAMES}

    def run_task(self, name: str) -> dict[str, Any]:
        """Run one task now and record the outcome; never raises for the task's own errors.

        Returns:
            The task's record after the run (status, duration, result or error).
        """
        if name not in self.tasks:
            raise UsageError(f"unknown task {name!r}; valid: {', '.join(TASK_NAMES)}")
        started = datetime.now(UTC)
        clock = time.perf_counter()
        status, result, error = "ok", None, None
        try:
            result = self.tasks[name]()
        except _Skipped as reason:
            status, result = "skipped", str(reason)
        except Exception as exc:  # a failing task must never stop the scheduler
            status, error = "failed", f"{type(exc).__name__}: {' '.join(str(exc).split())}"
            logger.exception("scheduled task %s failed; it runs again at its next time", name)
        upcoming = next_fire_time(self.triggers[name], datetime.now(UTC) + timedelta(seconds=1))
        self.state.record_run(
            name,
            started=started,
            seconds=time.perf_counter() - clock,
            status=status,
            result=_json_ready(result),
            error=error,
            next_run=upcoming,
        )
        return {"task": name, **self.state.task(name)}

    def _on_missed(self, event: JobEvent) -> None:
        name = str(event.job_id)
        upcoming = next_fire_time(self.triggers[name], datetime.now(UTC))
        logger.warning("scheduled task %s missed its run at %s", name, event.scheduled_run_time)
        self.state.record_missed(name, scheduled=event.scheduled_run_time, next_run=upcoming)

    def start(self) -> None:
        """Start the scheduler in a background thread."""
        if self._scheduler is not None:
            return
        ensure_home(self.settings)
        self._hold_lock()
        scheduler = BackgroundScheduler(
            timezone=self.zone,
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 3600},
        )
        for name in TASK_NAMES:
            scheduler.add_job(
                self.run_task, trigger=self.triggers[name], args=(name,), id=name, name=name
            )
        scheduler.add_listener(self._on_missed, EVENT_JOB_MISSED)
        scheduler.start()
        self._scheduler = scheduler
        self.state.record_schedule(self.next_runs(), timezone=self.timezone_name)
        logger.info("memory persistence scheduler started (%s)", self.timezone_name)

    def shutdown(self, *, wait: bool = True) -> None:
        """Stop the scheduler, letting a running task finish when ``wait``."""
        if self._scheduler is None:
            return
        self._scheduler.shutdown(wait=wait)
        self._scheduler = None
        self.state.record_stop()
        self._release_lock()

    def _hold_lock(self) -> None:
        """Take the home's scheduler lock, or raise naming the scheduler that holds it.

        A second scheduler would run every task twice and overwrite the first one's record,
        so that ``status`` called a running scheduler stopped. The lock dies with its process.
        """
        fd = os.open(self.settings.home / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            record = self.state.load()
            pid = record["scheduler"].get("pid") if scheduler_running(record) else None
            which = f" (pid {pid})" if pid is not None else ""
            raise MultiagentError(
                f"a scheduler already runs for {self.settings.home}{which}; one per data "
                "directory: stop it first (Ctrl-C or SIGTERM)"
            ) from None
        self._lock_fd = fd

    def _release_lock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor releases the lock
            self._lock_fd = None

    @property
    def running(self) -> bool:
        """Whether this object's scheduler thread runs."""
        return self._scheduler is not None and bool(self._scheduler.running)

    def run_forever(
        self, *, stop: threading.Event | None = None, duration_s: float | None = None
    ) -> None:
        """Run in the foreground until ``stop`` is set, ``duration_s`` passes or Ctrl-C."""
        stop = stop or threading.Event()
        # a wait beyond TIMEOUT_MAX (about 292 years) overflows: that long is for ever
        forever = duration_s is None or duration_s >= threading.TIMEOUT_MAX
        self.start()
        try:
            stop.wait(timeout=None if forever else duration_s)
        except KeyboardInterrupt:
            logger.info("memory persistence scheduler interrupted")
        finally:
            self.shutdown()

    def status(self, now: datetime | None = None) -> dict[str, Any]:
        """Each task's record with its schedule and next run."""
        record = self.state.load()
        upcoming = self.next_runs(now)
        tasks = {}
        for name in TASK_NAMES:
            task = self.state.task(name)
            task["next_run"] = _json_ready(upcoming[name])
            task["trigger"] = str(self.triggers[name])
            tasks[name] = task
        return {"timezone": self.timezone_name, "scheduler": record["scheduler"], "tasks": tasks}


def _json_ready(value: Any) -> Any:
    """Datetimes as ISO text, everything else as JSON can hold it."""
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    if isinstance(value, Mapping):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_ready(v) for v in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)
