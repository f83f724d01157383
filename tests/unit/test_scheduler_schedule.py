"""The maintenance schedule, computed with a fixed clock: first Sundays, daylight-saving days."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from multiagent.errors import UsageError
from multiagent.persistence.schedule import build_triggers, fire_times, next_fire_time
from multiagent.persistence.scheduler import MemoryPersistenceScheduler
from multiagent.policies import load_settings

NEW_YORK = ZoneInfo("America/New_York")
LONDON = ZoneInfo("Europe/London")


def _triggers(zone: str) -> dict[str, object]:
    return build_triggers(load_settings(), timezone=zone)


def test_next_runs_from_a_fixed_clock() -> None:
    scheduler = MemoryPersistenceScheduler(load_settings(), timezone="UTC")
    # Wednesday 2026-04-01 10:07 UTC
    runs = scheduler.next_runs(datetime(2026, 4, 1, 10, 7, tzinfo=UTC))
    assert runs["snapshots"] == datetime(2026, 4, 1, 12, 0, tzinfo=UTC)
    assert runs["metrics"] == datetime(2026, 4, 1, 10, 10, tzinfo=UTC)
    assert runs["backups"] == datetime(2026, 4, 2, 1, 0, tzinfo=UTC)
    assert runs["vacuum"] == datetime(2026, 4, 5, 2, 0, tzinfo=UTC)  # Sunday
    assert runs["compaction"] == datetime(2026, 4, 5, 3, 0, tzinfo=UTC)  # first Sunday of April
    later = scheduler.next_runs(datetime(2026, 4, 5, 3, 0, 1, tzinfo=UTC))
    assert later["compaction"] == datetime(2026, 5, 3, 3, 0, tzinfo=UTC)  # first Sunday of May


def test_compaction_runs_on_the_first_sunday_of_each_month() -> None:
    trigger = _triggers("UTC")["compaction"]
    fires = fire_times(
        trigger,
        start=datetime(2026, 1, 1, tzinfo=UTC),
        until=datetime(2026, 12, 31, tzinfo=UTC),
    )
    assert len(fires) == 12
    for fire in fires:
        assert fire.weekday() == 6
        assert fire.day <= 7
        assert (fire.hour, fire.minute) == (3, 0)
    # months whose 1st is a Sunday run on the 1st; March 2026 starts on a Sunday
    assert datetime(2026, 3, 1, 3, 0, tzinfo=UTC) in fires
    assert datetime(2026, 11, 1, 3, 0, tzinfo=UTC) in fires


def test_weekly_vacuum_on_sundays_at_two() -> None:
    fires = fire_times(
        _triggers("UTC")["vacuum"],
        start=datetime(2026, 6, 1, tzinfo=UTC),
        until=datetime(2026, 6, 30, tzinfo=UTC),
    )
    assert [f.day for f in fires] == [7, 14, 21, 28]
    assert all(f.weekday() == 6 and f.hour == 2 for f in fires)


def test_snapshots_every_six_hours() -> None:
    fires = fire_times(
        _triggers("UTC")["snapshots"],
        start=datetime(2026, 6, 1, tzinfo=UTC),
        until=datetime(2026, 6, 1, 23, 59, tzinfo=UTC),
    )
    assert [f.hour for f in fires] == [0, 6, 12, 18]


def test_spring_forward_runs_a_missing_wall_clock_time_once() -> None:
    # 2026-03-08 02:00 does not exist in New York (clocks jump 02:00 EST -> 03:00 EDT)
    vacuum = fire_times(
        _triggers("America/New_York")["vacuum"],
        start=datetime(2026, 3, 1, 12, tzinfo=NEW_YORK),
        until=datetime(2026, 3, 16, tzinfo=NEW_YORK),
    )
    assert [f.astimezone(UTC) for f in vacuum] == [
        datetime(2026, 3, 8, 7, 0, tzinfo=UTC),  # 03:00 EDT, the first moment after the gap
        datetime(2026, 3, 15, 6, 0, tzinfo=UTC),  # 02:00 EDT
    ]
    # London skips 01:00 on 2026-03-29: the daily backup still runs exactly once that day
    backups = fire_times(
        _triggers("Europe/London")["backups"],
        start=datetime(2026, 3, 28, tzinfo=LONDON),
        until=datetime(2026, 3, 30, 12, tzinfo=LONDON),
    )
    assert [f.astimezone(UTC) for f in backups] == [
        datetime(2026, 3, 28, 1, 0, tzinfo=UTC),
        datetime(2026, 3, 29, 1, 0, tzinfo=UTC),
        datetime(2026, 3, 30, 0, 0, tzinfo=UTC),  # 01:00 BST
    ]


def test_fall_back_runs_a_repeated_wall_clock_time_once() -> None:
    # 2026-11-01 01:00 happens twice in New York; the daily backup must not run twice
    backups = fire_times(
        _triggers("America/New_York")["backups"],
        start=datetime(2026, 10, 31, 12, tzinfo=NEW_YORK),
        until=datetime(2026, 11, 2, 12, tzinfo=NEW_YORK),
    )
    assert [f.astimezone(UTC) for f in backups] == [
        datetime(2026, 11, 1, 5, 0, tzinfo=UTC),  # 01:00 EDT, the first showing
        datetime(2026, 11, 2, 6, 0, tzinfo=UTC),  # 01:00 EST
    ]
    # asked in the middle of the repeated hour, the next backup is the next day's
    after_first = datetime(2026, 11, 1, 5, 30, tzinfo=UTC)
    trigger = _triggers("America/New_York")["backups"]
    assert next_fire_time(trigger, after_first) == datetime(2026, 11, 2, 6, 0, tzinfo=UTC)


def test_elapsed_time_tasks_keep_their_rhythm_through_both_changes() -> None:
    metrics = _triggers("America/New_York")["metrics"]
    # 00:00 EDT -> 03:00 EST on 2026-11-01 is four hours of elapsed time
    fall = fire_times(
        metrics,
        start=datetime(2026, 11, 1, 0, 0, tzinfo=NEW_YORK),
        until=datetime(2026, 11, 1, 3, 0, tzinfo=NEW_YORK),
    )
    assert len(fall) == 4 * 12 + 1
    gaps = {b - a for a, b in itertools.pairwise(fall)}
    assert gaps == {timedelta(minutes=5)}
    # 00:00 EST -> 04:00 EDT on 2026-03-08 is three hours
    spring = fire_times(
        metrics,
        start=datetime(2026, 3, 8, 0, 0, tzinfo=NEW_YORK),
        until=datetime(2026, 3, 8, 4, 0, tzinfo=NEW_YORK),
    )
    assert len(spring) == 3 * 12 + 1


def test_snapshot_interval_follows_the_profile(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MULTIAGENT_MEMORY__SNAPSHOT_INTERVAL_HOURS", "4")
    fires = fire_times(
        build_triggers(load_settings())["snapshots"],
        start=datetime(2026, 6, 1, tzinfo=UTC),
        until=datetime(2026, 6, 1, 23, 59, tzinfo=UTC),
    )
    assert [f.hour for f in fires] == [0, 4, 8, 12, 16, 20]


def test_unknown_time_zone_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="unknown time zone 'Mars/Olympus'"):
        MemoryPersistenceScheduler(load_settings(), timezone="Mars/Olympus")


def test_unknown_task_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="unknown task 'defrag'; valid: snapshots"):
        MemoryPersistenceScheduler(load_settings(), tasks={"defrag": lambda: None})
