"""The scheduler keeps running when a task fails, and persists every task's record."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from apscheduler.triggers.interval import IntervalTrigger

from multiagent.errors import MultiagentError
from multiagent.persistence import scheduler_state
from multiagent.persistence.scheduler import MemoryPersistenceScheduler
from multiagent.persistence.scheduler_state import scheduler_running
from multiagent.policies import load_settings


def _flaky_disk() -> None:
    raise OSError("disk full")


def test_a_failing_task_is_recorded_and_does_not_raise(isolated_env: Path) -> None:
    scheduler = MemoryPersistenceScheduler(load_settings(), tasks={"backups": _flaky_disk})
    record = scheduler.run_task("backups")
    assert record["last_status"] == "failed"
    assert record["last_error"] == "OSError: disk full"
    assert record["failures"] == 1
    # tried again at its next time: the next run is the next 01:00
    next_run = datetime.fromisoformat(record["next_run"])
    assert (next_run.hour, next_run.minute) == (1, 0)
    assert next_run > datetime.now(UTC)
    persisted = json.loads((isolated_env / "scheduler.json").read_text())
    assert persisted["tasks"]["backups"]["last_error"] == "OSError: disk full"


def test_metrics_without_a_hook_is_skipped_and_with_one_is_called() -> None:
    settings = load_settings()
    skipped = MemoryPersistenceScheduler(settings).run_task("metrics")
    assert skipped["last_status"] == "skipped"
    assert skipped["last_result"] == "no metrics hook installed"
    calls: list[int] = []
    hooked = MemoryPersistenceScheduler(
        settings, metrics_hook=lambda: calls.append(1) or {"persisted": len(calls)}
    )
    record = hooked.run_task("metrics")
    assert calls == [1]
    assert record["last_status"] == "ok"
    assert record["last_result"] == {"persisted": 1}
    assert record["runs"] == 2  # the record is shared through the state file


@pytest.mark.timeout(30)
def test_the_scheduler_survives_a_task_that_always_fails(isolated_env: Path) -> None:
    ran: list[float] = []
    fast = IntervalTrigger(seconds=0.2, start_date=datetime.now(UTC))
    scheduler = MemoryPersistenceScheduler(
        load_settings(),
        tasks={"vacuum": _flaky_disk, "backups": lambda: ran.append(time.monotonic())},
        triggers={"vacuum": fast, "backups": fast},
    )
    scheduler.start()
    try:
        assert scheduler_running(scheduler.state.load())
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if scheduler.state.task("vacuum")["failures"] >= 3 and len(ran) >= 3:
                break
            time.sleep(0.05)
        assert scheduler.running
    finally:
        scheduler.shutdown()
    vacuum = scheduler.state.task("vacuum")
    assert vacuum["failures"] >= 3
    assert vacuum["last_status"] == "failed"
    assert len(ran) >= 3
    assert scheduler.state.task("backups")["last_status"] == "ok"
    assert not scheduler_running(scheduler.state.load())
    status = scheduler.status()
    assert set(status["tasks"]) == {"snapshots", "vacuum", "backups", "compaction", "metrics"}
    assert status["tasks"]["compaction"]["next_run"] is not None


def test_foreground_run_stops_after_its_duration() -> None:
    scheduler = MemoryPersistenceScheduler(load_settings())
    scheduler.run_forever(duration_s=0.2)
    record = scheduler.state.load()
    started = datetime.fromisoformat(record["scheduler"]["started_at"])
    stopped = datetime.fromisoformat(record["scheduler"]["stopped_at"])
    # a lower bound on its own record: a busy machine only makes the run longer
    assert stopped - started >= timedelta(seconds=0.2)
    assert record["tasks"]["backups"]["next_run"] is not None


@pytest.mark.parametrize("duration", [1e10, 1e300])
def test_a_duration_of_centuries_runs_until_stopped(duration: float) -> None:
    # `persistence scheduler --duration 1e10` ended in a traceback: the wait overflowed
    import threading

    class StopSoonAfterTheWaitBegins(threading.Event):
        def wait(self, timeout: float | None = None) -> bool:
            threading.Timer(0.05, self.set).start()
            return super().wait(timeout)

    scheduler = MemoryPersistenceScheduler(load_settings())
    scheduler.run_forever(stop=StopSoonAfterTheWaitBegins(), duration_s=duration)
    assert scheduler.state.load()["scheduler"]["stopped_at"] is not None


def test_a_second_scheduler_for_the_same_home_is_refused() -> None:
    first = MemoryPersistenceScheduler(load_settings())
    first.start()
    try:
        second = MemoryPersistenceScheduler(load_settings())
        with pytest.raises(MultiagentError, match=r"a scheduler already runs .*\(pid \d+\)"):
            second.start()
        assert not second.running
        second.shutdown()  # nothing started: the running one's record stays as it is
        assert scheduler_running(first.state.load())
    finally:
        first.shutdown()
    third = MemoryPersistenceScheduler(load_settings())
    third.start()  # the lock went with the first scheduler
    third.shutdown()


def test_a_task_run_now_beside_the_scheduler_loses_neither_record(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The scheduler and ``--run-now`` are two processes (here two state objects, each with its
    own thread lock): one records its run after the other has read the file, before it writes."""
    settings = load_settings()
    scheduler = MemoryPersistenceScheduler(settings, tasks={"backups": lambda: "backed up"})
    run_now = MemoryPersistenceScheduler(settings, tasks={"snapshots": lambda: "snapped"})
    write = scheduler_state.atomic_write_bytes
    other: list[threading.Thread] = []

    def the_other_records_meanwhile(path: Path, data: bytes) -> None:
        if not other:  # the scheduler's write, its record read already
            other.append(threading.Thread(target=run_now.run_task, args=("snapshots",)))
            other[0].start()
            other[0].join(timeout=2.0)  # under the file lock it waits for this write
        write(path, data)

    monkeypatch.setattr(scheduler_state, "atomic_write_bytes", the_other_records_meanwhile)
    scheduler.run_task("backups")
    other[0].join()
    tasks = scheduler.state.load()["tasks"]
    assert (tasks["backups"]["runs"], tasks["snapshots"]["runs"]) == (1, 1)
    assert tasks["snapshots"]["last_result"] == "snapped"
