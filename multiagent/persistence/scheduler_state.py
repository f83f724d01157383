"""What the scheduler remembers about each task, in ``<home>/scheduler.json``.

Last run, its outcome and duration, last error, run and failure counts, and the next run of
every task, plus which process runs the scheduler. Written atomically after every change, so
``multiagent persistence status`` in another process always reads a whole file. Each change
reads, changes and writes the file under an exclusive ``flock`` of ``scheduler.json.lock``: a
task run now (``scheduler --run-now``) beside the running scheduler would otherwise overwrite
the record of a run the scheduler made meanwhile.
"""

from __future__ import annotations

import json
import os
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from multiagent.persistence._files import FileLock, atomic_write_bytes

STATE_FILE = "scheduler.json"
STATE_VERSION = 1
#: The scheduler's tasks, in the order they run and are listed (defined here, not in
#: ``schedule``, so that the CLI names them without importing APScheduler).
TASK_NAMES: tuple[str, ...] = ("snapshots", "vacuum", "backups", "compaction", "metrics")


def _iso(moment: datetime | None) -> str | None:
    return moment.astimezone(UTC).isoformat() if moment is not None else None


def _empty_task() -> dict[str, Any]:
    return {
        "last_run": None,
        "last_status": None,
        "last_duration_s": None,
        "last_result": None,
        "last_error": None,
        "last_error_at": None,
        "runs": 0,
        "failures": 0,
        "next_run": None,
    }


class SchedulerState:
    """The persisted record of scheduled tasks (safe between threads and processes)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._file_lock = FileLock(path.with_name(path.name + ".lock"))

    def load(self) -> dict[str, Any]:
        """The whole record; an empty one when the file is missing or unreadable."""
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {"version": STATE_VERSION, "scheduler": {}, "tasks": {}}
        if not isinstance(data, dict) or data.get("version") != STATE_VERSION:
            return {"version": STATE_VERSION, "scheduler": {}, "tasks": {}}
        # a record of the wrong shape (edited, or written by something else) is derived data:
        # its unreadable parts start afresh, as an unreadable file does
        if not isinstance(data.get("scheduler"), dict):
            data["scheduler"] = {}
        tasks = data.get("tasks")
        tasks = tasks if isinstance(tasks, dict) else {}
        data["tasks"] = {name: task for name, task in tasks.items() if isinstance(task, dict)}
        for task in data["tasks"].values():
            for counter in ("runs", "failures"):
                value = task.get(counter, 0)
                if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                    task[counter] = 0
        return data

    def _update(self, change: Any) -> None:
        with self._lock, self._file_lock.exclusive():
            data = self.load()
            change(data)
            data["updated_at"] = datetime.now(UTC).isoformat()
            atomic_write_bytes(self.path, json.dumps(data, indent=2, sort_keys=True).encode())

    def task(self, name: str) -> dict[str, Any]:
        """One task's record."""
        return {**_empty_task(), **self.load()["tasks"].get(name, {})}

    def record_run(
        self,
        name: str,
        *,
        started: datetime,
        seconds: float,
        status: str,
        result: Any = None,
        error: str | None = None,
        next_run: datetime | None = None,
    ) -> None:
        """Record a finished run: ``status`` is ``ok``, ``failed`` or ``skipped``."""

        def change(data: dict[str, Any]) -> None:
            task = {**_empty_task(), **data["tasks"].get(name, {})}
            task.update(
                last_run=_iso(started),
                last_status=status,
                last_duration_s=round(seconds, 4),
                last_result=result,
                runs=int(task["runs"]) + 1,
                next_run=_iso(next_run),
            )
            if status == "failed":
                task.update(
                    last_error=error,
                    last_error_at=_iso(started),
                    failures=int(task["failures"]) + 1,
                )
            data["tasks"][name] = task

        self._update(change)

    def record_missed(self, name: str, *, scheduled: datetime, next_run: datetime | None) -> None:
        """Record a run the scheduler could not start in time (the process was asleep)."""

        def change(data: dict[str, Any]) -> None:
            task = {**_empty_task(), **data["tasks"].get(name, {})}
            task.update(last_status="missed", last_missed=_iso(scheduled), next_run=_iso(next_run))
            data["tasks"][name] = task

        self._update(change)

    def record_schedule(self, next_runs: dict[str, datetime | None], *, timezone: str) -> None:
        """Record that this process runs the scheduler, and each task's next run."""

        def change(data: dict[str, Any]) -> None:
            data["scheduler"] = {
                "pid": os.getpid(),
                "started_at": datetime.now(UTC).isoformat(),
                "stopped_at": None,
                "timezone": timezone,
            }
            for name, moment in next_runs.items():
                task = {**_empty_task(), **data["tasks"].get(name, {})}
                task["next_run"] = _iso(moment)
                data["tasks"][name] = task

        self._update(change)

    def record_stop(self) -> None:
        """Record that the scheduler stopped."""

        def change(data: dict[str, Any]) -> None:
            data["scheduler"]["stopped_at"] = datetime.now(UTC).isoformat()

        self._update(change)


def scheduler_running(record: dict[str, Any]) -> bool:
    """Whether the process the record names as running the scheduler is alive."""
    info = record.get("scheduler") or {}
    pid = info.get("pid")
    if not isinstance(pid, int) or info.get("stopped_at"):
        return False
    return pid_alive(pid)


def pid_alive(pid: int, *, since: float | None = None) -> bool:
    """Whether process ``pid`` of this machine is alive (another user's counts as alive).

    With ``since`` (epoch seconds: when the process was seen to start its work), a process
    under that pid that started after it is another one, the pid reused: not alive. Where the
    start cannot be read (no ``/proc``), the pid alone decides.
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    if since is None:
        return True
    started = process_start(pid)
    # the start is known to a clock tick; a second of slack covers it and the clock's steps
    return started is None or started <= since + 1.0


def process_start(pid: int) -> float | None:
    """When process ``pid`` started, in epoch seconds (Linux ``/proc``), or ``None``."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
        boot = next(
            float(line.split()[1])
            for line in Path("/proc/stat").read_text(encoding="ascii").splitlines()
            if line.startswith("btime ")
        )
        # the fields after the command name (which may hold spaces): starttime is field 22
        ticks = int(stat.rsplit(")", 1)[1].split()[19])
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None
    return True
