"""When the memory-persistence tasks run: APScheduler 3 triggers in a given time zone.

| task | when |
| --- | --- |
| snapshots | every ``profile.memory.snapshot_interval_hours`` (6 h: 00, 06, 12, 18 UTC) |
| vacuum | weekly, Sunday 02:00 |
| backups | daily, 01:00 |
| compaction | monthly, first Sunday 03:00 |
| metrics | every 5 minutes |

Daylight saving: a wall-clock time that does not exist (spring forward) fires once, at the
same instant one hour later in wall-clock terms; a wall-clock time that happens twice (fall
back) fires once for the daily, weekly and monthly tasks. Snapshots and metrics count elapsed
time, so they keep their rhythm through both changes.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from multiagent.errors import UsageError
from multiagent.persistence.scheduler_state import TASK_NAMES as TASK_NAMES
from multiagent.policies import Settings

_ANCHOR = datetime(2000, 1, 1, tzinfo=UTC)  # interval triggers count from a fixed instant


class WallClockCronTrigger(CronTrigger):  # type: ignore[misc]
    """A cron trigger that fires once when its wall-clock time happens twice (fall back)."""

    def get_next_fire_time(self, previous_fire_time: Any, now: datetime) -> Any:
        candidate = super().get_next_fire_time(previous_fire_time, now)
        for _ in range(4):
            repeat = _repeat_offset(candidate, self.timezone) if candidate else None
            if repeat is None:
                return candidate
            # the local time already passed once: look again once the repeated hour is over
            candidate = super().get_next_fire_time(None, candidate + repeat)
        return candidate


def _repeat_offset(moment: datetime, zone: tzinfo) -> timedelta | None:
    """If ``moment`` is the second showing of a local time (fall back), how long the repeated
    stretch lasts; else ``None``."""
    local = moment.astimezone(zone)
    first = local.replace(tzinfo=None).replace(tzinfo=zone, fold=0)
    first_offset, offset = first.utcoffset(), local.utcoffset()
    if first_offset is None or offset is None or first_offset == offset:
        return None
    return first_offset - offset


def resolve_timezone(name: str | tzinfo) -> tzinfo:
    """A tzinfo from an IANA name such as ``"Europe/Berlin"`` (or a tzinfo, returned as is).

    Raises:
        UsageError: The name is not a known time zone.
    """
    if isinstance(name, tzinfo):
        return name
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise UsageError(
            f"unknown time zone {name!r}; use an IANA name such as UTC or Europe/Berlin"
        ) from None


def interval_trigger(*, hours: float) -> Any:
    """Every ``hours`` of elapsed time, counted from 2000-01-01 00:00 UTC (6 h fires at 00, 06,
    12 and 18 UTC), so that daylight-saving changes neither skip nor double a run.

    It computes in UTC: APScheduler adds intervals in wall-clock time, which stalls in a
    repeated hour.
    """
    return IntervalTrigger(hours=hours, start_date=_ANCHOR, timezone=UTC)


def build_triggers(settings: Settings, *, timezone: str | tzinfo = "UTC") -> dict[str, Any]:
    """The trigger of every task, by task name."""
    zone = resolve_timezone(timezone)
    return {
        "snapshots": interval_trigger(hours=settings.profile.memory.snapshot_interval_hours),
        "vacuum": WallClockCronTrigger(day_of_week="sun", hour=2, minute=0, timezone=zone),
        "backups": WallClockCronTrigger(hour=1, minute=0, timezone=zone),
        "compaction": WallClockCronTrigger(day="1st sun", hour=3, minute=0, timezone=zone),
        "metrics": interval_trigger(hours=5 / 60),
    }


def next_fire_time(trigger: Any, now: datetime) -> datetime | None:
    """The first time at or after ``now`` the trigger fires."""
    result = trigger.get_next_fire_time(None, now)
    return result if isinstance(result, datetime) else None


def fire_times(trigger: Any, *, start: datetime, until: datetime) -> list[datetime]:
    """Every time the trigger fires from ``start`` up to ``until``, as the scheduler sees it."""
    times: list[datetime] = []
    previous = None
    now = start
    while True:
        fire = trigger.get_next_fire_time(previous, now)
        if not isinstance(fire, datetime) or fire > until:
            return times
        if previous is not None and fire <= previous:
            raise RuntimeError(f"trigger {trigger} did not advance past {previous}")
        times.append(fire)
        previous, now = fire, fire + timedelta(microseconds=1)
