"""Metrics history in SQLite: exactly-once deltas, 5-minute buckets, trimming, failed writes."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import pytest

from multiagent._metrics import MetricsStore
from multiagent.errors import UsageError
from multiagent.observability import _history_db
from multiagent.observability.history import (
    BUCKET_S,
    MetricsHistory,
    bucket_start,
    gauge_points,
    history_path,
    metrics_persist_hook,
    persist_metrics,
    unpersisted,
)
from multiagent.persistence.scheduler import MemoryPersistenceScheduler
from multiagent.policies import Settings, load_settings

NOW = 1_800_000_000.0  # a multiple of 300: the start of a bucket
CALL = {"provider": "sim", "model": "gpt-4o-mini", "agent": "analyst", "outcome": "ok"}


@pytest.fixture
def settings() -> Settings:
    return load_settings()


def _call(store: MetricsStore, *, n: int = 1, tokens: int = 10, cost: float = 0.001) -> None:
    for _ in range(n):
        store.inc("model_calls_total", labels=CALL)
        store.inc(
            "model_tokens_total",
            value=tokens,
            labels={"model": "gpt-4o-mini", "direction": "input"},
        )
        store.inc("model_cost_usd_total", value=cost, labels={"model": "gpt-4o-mini"})


def _total(settings: Settings, name: str, *, store: MetricsStore | None = None) -> float:
    found = MetricsHistory(settings, store=store or MetricsStore()).totals(live=False)
    return sum(s.value for s in found if s.name == f"multiagent_{name}")


def test_totals_are_exact_after_many_persists(settings: Settings) -> None:
    store = MetricsStore()
    expected = 0
    for round_ in range(6):
        _call(store, n=round_)
        expected += round_
        persist_metrics(settings, store=store, now=NOW + round_)
        persist_metrics(settings, store=store, now=NOW + round_ + 0.5)  # nothing new: no change
    assert _total(settings, "model_calls_total") == expected == 15
    assert _total(settings, "model_tokens_total") == 150
    assert _total(settings, "model_cost_usd_total") == pytest.approx(0.015)
    assert unpersisted(store) == []


def test_a_persist_writes_only_what_is_new(settings: Settings) -> None:
    store = MetricsStore()
    _call(store, n=3)
    first = persist_metrics(settings, store=store, now=NOW)
    assert first.series == 3
    assert first.bucket_start == NOW
    _call(store, n=2, tokens=0)  # tokens 0: that counter gains nothing
    second = persist_metrics(settings, store=store, now=NOW + BUCKET_S)
    assert second.series == 2  # calls and cost; the token counter gained nothing
    points = MetricsHistory(settings, store=store).points(hours=1, now=NOW + BUCKET_S)
    assert [p["calls"] for p in points[-2:]] == [3, 2]
    assert points[-1]["input_tokens"] == 0


def test_live_totals_add_unpersisted_counts_once(settings: Settings) -> None:
    store = MetricsStore()
    _call(store, n=4)
    persist_metrics(settings, store=store, now=NOW)
    _call(store, n=3)
    reader = MetricsHistory(settings, store=store)
    live = [s for s in reader.totals() if s.name == "multiagent_model_calls_total"]
    assert [s.value for s in live] == [7]
    assert _total(settings, "model_calls_total") == 4
    points = reader.points(hours=1, now=NOW + 10)
    assert points[-1]["calls"] == 7  # persisted 4 + live 3, all in the current bucket


def test_a_reset_store_counts_from_zero_again(settings: Settings) -> None:
    store = MetricsStore()
    _call(store, n=5)
    persist_metrics(settings, store=store, now=NOW)
    store.reset()
    _call(store, n=2)
    persist_metrics(settings, store=store, now=NOW + 1)
    assert _total(settings, "model_calls_total") == 7


def test_points_cover_every_bucket_and_24_hours_is_288(settings: Settings) -> None:
    store = MetricsStore()
    _call(store)
    persist_metrics(settings, store=store, now=NOW - 3600)
    reader = MetricsHistory(settings, store=store)
    day = reader.points(hours=24, now=NOW + 17)
    assert len(day) == 288
    starts = [p["timestamp"] for p in day]
    assert starts == list(range(int(NOW) - 287 * BUCKET_S, int(NOW) + 1, BUCKET_S))
    assert sum(p["calls"] for p in day) == 1
    assert next(p for p in day if p["calls"])["timestamp"] == NOW - 3600
    assert len(reader.points(hours=1, now=NOW)) == 12


@pytest.mark.parametrize("hours", [0, 25, -1])
def test_hours_outside_1_to_24_are_refused(settings: Settings, hours: int) -> None:
    with pytest.raises(UsageError, match=f"between 1 and 24, got {hours}"):
        MetricsHistory(settings).points(hours=hours)


def test_points_older_than_a_day_are_trimmed_but_totals_stay(settings: Settings) -> None:
    store = MetricsStore()
    _call(store, n=2)
    persist_metrics(settings, store=store, now=NOW)
    _call(store, n=1)
    persist_metrics(settings, store=store, now=NOW + 23 * 3600)
    reader = MetricsHistory(settings, store=store)
    assert reader.stored_buckets() == 2
    _call(store, n=1)
    result = persist_metrics(settings, store=store, now=NOW + 24 * 3600)
    assert result.trimmed_buckets == 1
    assert reader.stored_buckets() == 2
    assert _total(settings, "model_calls_total") == 4
    with closing(sqlite3.connect(history_path(settings))) as conn:
        oldest = conn.execute("SELECT MIN(start) FROM buckets").fetchone()[0]
        persists = conn.execute("SELECT COUNT(*) FROM persists").fetchone()[0]
    assert oldest == bucket_start(NOW + 23 * 3600)
    assert persists == 2  # the write of a day ago is gone too


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        conn.execute("BEGIN EXCLUSIVE")
        try:
            yield
        finally:
            conn.execute("ROLLBACK")


def test_a_failed_write_is_retried_whole_by_the_next_persist(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = MetricsStore()
    _call(store, n=2)
    persist_metrics(settings, store=store, now=NOW)
    _call(store, n=3)
    monkeypatch.setattr(_history_db, "BUSY_TIMEOUT_MS", 50)
    with _locked(history_path(settings)), pytest.raises(sqlite3.OperationalError):
        persist_metrics(settings, store=store, now=NOW + 1)
    assert _total(settings, "model_calls_total") == 2
    assert len(unpersisted(store)) == 3
    persist_metrics(settings, store=store, now=NOW + 2)
    assert _total(settings, "model_calls_total") == 5


def test_reading_never_creates_the_file(settings: Settings) -> None:
    reader = MetricsHistory(settings, store=MetricsStore())
    assert reader.totals() == []
    assert reader.last_persist() is None
    assert len(reader.points(hours=2)) == 24
    assert not history_path(settings).exists()


def test_the_scheduler_metrics_task_persists_through_the_hook(settings: Settings) -> None:
    store = MetricsStore()
    _call(store, n=3)
    scheduler = MemoryPersistenceScheduler(
        settings, metrics_hook=metrics_persist_hook(settings, store=store)
    )
    record = scheduler.run_task("metrics")
    assert record["last_status"] == "ok"
    readings = 8  # entries, size, hits and misses of both caches
    assert record["last_result"]["series"] == 3 + readings
    assert _total(settings, "model_calls_total") == 3
    last = MetricsHistory(settings).last_persist()
    assert last is not None
    assert last["series"] == 3 + readings


def test_the_scheduler_process_persists_real_readings_with_no_calls_of_its_own(
    settings: Settings,
) -> None:
    from multiagent.models.completion_cache import open_completion_cache

    cache = open_completion_cache(settings.home, ttl_s=3600)
    cache.stats()  # the cache exists: its counters are what the scheduler reads
    hook = metrics_persist_hook(settings, store=MetricsStore())
    result = hook()
    assert result["series"] == 8
    stored = {(p["name"], p["labels"]["cache"]) for p in gauge_points(settings, hours=1)}
    assert ("multiagent_cache_entries", "completion") in stored
    assert ("multiagent_cache_hits", "analysis") in stored


def test_a_process_ending_writes_its_counts_even_when_the_cache_cannot_be_written(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from multiagent._metrics import get_metrics
    from multiagent.models import _cache_writer
    from multiagent.observability import history

    def broken() -> None:
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(_cache_writer, "flush_write_behind", broken)
    before = _total(settings, "model_calls_total", store=get_metrics())
    _call(get_metrics(), n=2)
    history.persist_process(settings)  # a cache that cannot be written is only a cache
    assert _total(settings, "model_calls_total", store=get_metrics()) == before + 2
    assert not unpersisted()

    _call(get_metrics())
    monkeypatch.setattr(history, "persist_metrics", lambda settings: broken())
    with pytest.raises(sqlite3.OperationalError):
        history.persist_process(settings)  # the counts' own failure is the caller's to see
    history.persist_process(settings, quiet=True)  # unless it must leave all the same
