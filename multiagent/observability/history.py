"""Metrics history: counters of short CLI processes kept in SQLite under ``MULTIAGENT_HOME``.

Each process records into its own in-memory store (:func:`~multiagent._metrics.
get_metrics`); :func:`persist_metrics` writes what the store counted *since this process last
persisted it* (deltas), in one transaction, into ``<home>/metrics.sqlite``:

- ``buckets``: the deltas added into their 5-minute bucket (``start`` is a multiple of 300 s),
  so a day is at most 288 points per series, however many processes wrote;
- ``totals``: all-time sums, kept when buckets older than 24 hours are trimmed;
- ``persists``: when each write happened and from which process (trimmed after 24 hours).

A process's baseline (what it has persisted) moves only after its transaction commits, so a
failed write is retried whole by the next persist and a counter is never written twice. Several
processes write the same file safely: WAL journal, a busy timeout, ``BEGIN IMMEDIATE``.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from multiagent._metrics import MetricsStore, Series, get_metrics
from multiagent.errors import UsageError
from multiagent.observability._history_db import read_rows, write_transaction
from multiagent.observability.summary import LabelKey, merge_series, point_of, series_key
from multiagent.policies import Settings

HISTORY_FILE = "metrics.sqlite"
BUCKET_S = 300
KEEP_S = 24 * 3600
MAX_HOURS = 24


def history_path(settings: Settings) -> Path:
    """Where the metrics history of a data directory lives."""
    return Path(settings.home) / HISTORY_FILE


def bucket_start(moment: float) -> int:
    """The start (unix seconds) of the 5-minute bucket holding ``moment``."""
    return int(moment // BUCKET_S) * BUCKET_S


def _labels_text(labels: dict[str, str]) -> str:
    return json.dumps(dict(sorted(labels.items())), separators=(",", ":"), ensure_ascii=False)


@dataclass
class _Baseline:
    """What one store has persisted so far (per process)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    persisted: dict[LabelKey, float] = field(default_factory=dict)


_BASELINES: weakref.WeakKeyDictionary[MetricsStore, _Baseline] = weakref.WeakKeyDictionary()
_BASELINES_LOCK = threading.Lock()


def _baseline(store: MetricsStore) -> _Baseline:
    with _BASELINES_LOCK:
        found = _BASELINES.get(store)
        if found is None:
            found = _BASELINES[store] = _Baseline()
        return found


def reset_process_metrics(store: MetricsStore | None = None) -> None:
    """Forget a store's counts and what was persisted of them, so it starts from zero again."""
    store = store if store is not None else get_metrics()
    with _BASELINES_LOCK:
        _BASELINES.pop(store, None)
    for key in [k for k in _SINKS if k[0] == id(store)]:
        _SINKS.pop(key)()
    store.reset()


def _deltas(counters: Iterable[Series], persisted: dict[LabelKey, float]) -> list[Series]:
    """What each counter gained since it was persisted (a counter that went down was reset)."""
    out = []
    for series in counters:
        before = persisted.get(series_key(series), 0.0)
        delta = series.value - before if series.value >= before else series.value
        if delta > 0:
            out.append(Series(series.name, series.labels, delta))
    return out


@dataclass(frozen=True)
class PersistResult:
    """One write of the history."""

    path: Path
    at: float
    bucket_start: int
    series: int
    trimmed_buckets: int

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready data (the scheduler records it as the task's result)."""
        return {
            "path": str(self.path),
            "at": datetime.fromtimestamp(self.at, UTC).isoformat(),
            "bucket_start": datetime.fromtimestamp(self.bucket_start, UTC).isoformat(),
            "series": self.series,
            "trimmed_buckets": self.trimmed_buckets,
        }


def persist_metrics(
    settings: Settings,
    *,
    store: MetricsStore | None = None,
    now: float | None = None,
    gauges: Iterable[Series] = (),
) -> PersistResult:
    """Write what ``store`` counted since its last persist into the history, atomically.

    Call it at the end of a run, and every 5 minutes in a long-lived process (see
    :func:`metrics_persist_hook`). Points older than 24 hours are trimmed in the same
    transaction. A process should persist one store to one data directory.

    Args:
        settings: Resolved settings (the data directory).
        store: The metrics store; default: the process's (:func:`get_metrics`).
        now: Unix time of the point (tests); default: the current time.
        gauges: Readings of shared state (cache entries, hit counters) kept as the bucket's
            latest value in the ``gauges`` table.

    Returns:
        Where and when it wrote, and how many series had something new.
    """
    store = store if store is not None else get_metrics()
    moment = time.time() if now is None else now
    start = bucket_start(moment)
    path = history_path(settings)
    baseline = _baseline(store)
    with baseline.lock:
        current = store.snapshot().counters
        deltas = _deltas(current, baseline.persisted)
        with write_transaction(path) as conn:
            for series in deltas:
                row = (series.name, _labels_text(series.labels), series.value)
                conn.execute(
                    "INSERT INTO buckets VALUES (?, ?, ?, ?) ON CONFLICT (start, name, labels) "
                    "DO UPDATE SET value = value + excluded.value",
                    (start, *row),
                )
                conn.execute(
                    "INSERT INTO totals VALUES (?, ?, ?) ON CONFLICT (name, labels) DO UPDATE "
                    "SET value = value + excluded.value",
                    row,
                )
            readings = list(gauges)
            for series in readings:
                conn.execute(
                    "INSERT INTO gauges VALUES (?, ?, ?, ?) ON CONFLICT (start, name, labels) "
                    "DO UPDATE SET value = excluded.value",
                    (start, series.name, _labels_text(series.labels), series.value),
                )
            written = len(deltas) + len(readings)
            conn.execute(
                "INSERT INTO persists VALUES (?, ?, ?, ?)",
                (moment, os.getpid(), socket.gethostname(), written),
            )
            trimmed = _trim(conn, moment)
        baseline.persisted = {series_key(s): s.value for s in current}
    return PersistResult(path, moment, start, written, trimmed)


def _trim(conn: sqlite3.Connection, moment: float) -> int:
    """Drop buckets and persist records older than the kept day; return buckets dropped."""
    oldest_kept = bucket_start(moment) - (KEEP_S // BUCKET_S - 1) * BUCKET_S
    (dropped,) = conn.execute(
        "SELECT COUNT(DISTINCT start) FROM buckets WHERE start < ?", (oldest_kept,)
    ).fetchone()
    if dropped:
        conn.execute("DELETE FROM buckets WHERE start < ?", (oldest_kept,))
    conn.execute("DELETE FROM gauges WHERE start < ?", (oldest_kept,))
    conn.execute("DELETE FROM persists WHERE at < ?", (oldest_kept,))
    return int(dropped)


def metrics_persist_hook(
    settings: Settings, *, store: MetricsStore | None = None
) -> Callable[[], dict[str, Any]]:
    """The ``metrics_hook`` of :class:`~multiagent.persistence.scheduler.
    MemoryPersistenceScheduler`, run every 5 minutes.

    The scheduler's process makes no model calls: runs persist their own counts (see
    :func:`install_history_sink`). What it adds is what no single run owns: the caches'
    entries, size and hit counters (every process's), this process's live gauges (queues,
    shared limiters) and its own counts, as one point of the history.
    """

    def hook() -> dict[str, Any]:
        from multiagent.observability.cache_stats import cache_analytics, cache_gauges

        live = store if store is not None else get_metrics()
        analytics = cache_analytics(settings)
        readings = [*cache_gauges(analytics), *live.snapshot().gauges]
        for cache in ("completion", "analysis"):
            for figure in ("hits", "misses"):
                name = f"multiagent_cache_{figure}"
                value = float(analytics[cache][figure])
                readings.append(Series(name, {"cache": cache}, value))
        return persist_metrics(settings, store=live, gauges=readings).as_dict()

    return hook


_SINKS: dict[tuple[int, str], Callable[[], None]] = {}


def install_history_sink(settings: Settings, *, store: MetricsStore | None = None) -> None:
    """Persist ``store`` (default: the process's) into the history of ``settings.home`` every
    time its periodic reader exports (every 5 minutes, and at interpreter exit): a short CLI
    process and a long worker alike leave their counts behind. Idempotent per home."""
    live = store if store is not None else get_metrics()
    key = (id(live), str(Path(settings.home).resolve()))
    if key in _SINKS:
        return

    def sink(_: object) -> None:
        # a fresh snapshot under the persist lock, not the export's: an export collected
        # before an explicit persist must not be taken for a counter reset
        if unpersisted(live):
            persist_metrics(settings, store=live)

    _SINKS[key] = live.add_sink(sink)


def gauge_points(
    settings: Settings, *, hours: int, now: float | None = None
) -> list[dict[str, Any]]:
    """The stored gauge readings of the last ``hours``: ``{timestamp, name, labels, value}``."""
    check_hours(hours)
    moment = time.time() if now is None else now
    first = bucket_start(moment) - (hours * 3600 // BUCKET_S - 1) * BUCKET_S
    rows = read_rows(
        history_path(settings),
        "SELECT start, name, labels, value FROM gauges WHERE start >= ? ORDER BY start",
        (first,),
    )
    return [
        {"timestamp": int(start), "name": name, "labels": json.loads(labels), "value": value}
        for start, name, labels, value in rows
    ]


def unpersisted(store: MetricsStore | None = None) -> list[Series]:
    """What ``store`` counted that it has not persisted yet."""
    store = store if store is not None else get_metrics()
    baseline = _baseline(store)
    with baseline.lock:
        return _deltas(store.snapshot().counters, baseline.persisted)


def persist_process(settings: Settings, *, quiet: bool = False) -> None:
    """Write what this process counted and has not written yet, as it ends its work: the
    completion cache's answers waiting to be written behind, then the metrics counted since the
    last persist (a process that counted nothing writes nothing).

    Every way a process finishes calls this: a CLI run, a local batch, a worker's exit, LangGraph
    Server's shutdown. A cache that cannot be written is only a cache: its error is swallowed.
    ``quiet`` swallows the metrics' error too, for a process that must leave all the same.
    """
    from multiagent.models._cache_writer import flush_write_behind

    with contextlib.suppress(Exception):
        flush_write_behind()
    try:
        if unpersisted():
            persist_metrics(settings)
    except Exception:
        if not quiet:
            raise


def check_hours(hours: int) -> int:
    """Return ``hours`` if it is 1 to 24, else raise a one-line :class:`UsageError`."""
    if not 1 <= hours <= MAX_HOURS:
        raise UsageError(f"hours must be between 1 and {MAX_HOURS}, got {hours}")
    return hours


class MetricsHistory:
    """Read the metrics history of a data directory (never creates the file).

    Args:
        settings: Resolved settings (the data directory).
        store: This process's store, whose unpersisted counts the ``live`` readings add.
    """

    def __init__(self, settings: Settings, *, store: MetricsStore | None = None) -> None:
        self.path = history_path(settings)
        self.store = store if store is not None else get_metrics()

    def _rows(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        return read_rows(self.path, sql, args)

    def totals(self, *, live: bool = True) -> list[Series]:
        """All-time counter totals, plus this process's unpersisted counts when ``live``.

        The two are read under the store's persist lock, so a persist happening meanwhile is
        counted exactly once.
        """
        baseline = _baseline(self.store)
        with baseline.lock:
            rows = self._rows("SELECT name, labels, value FROM totals")
            extra = _deltas(self.store.snapshot().counters, baseline.persisted) if live else []
        return merge_series([Series(n, json.loads(lb), v) for n, lb, v in rows], extra)

    def points(
        self, *, hours: int, now: float | None = None, live: bool = True
    ) -> list[dict[str, Any]]:
        """The last ``hours`` as 5-minute points, oldest first, the current bucket last.

        Every bucket is present (zeros where nothing was recorded): ``hours * 12`` points.

        Raises:
            UsageError: ``hours`` is not 1 to 24.
        """
        check_hours(hours)
        moment = time.time() if now is None else now
        last = bucket_start(moment)
        first = last - (hours * 3600 // BUCKET_S - 1) * BUCKET_S
        baseline = _baseline(self.store)
        with baseline.lock:
            rows = self._rows(
                "SELECT start, name, labels, value FROM buckets WHERE start >= ? AND start <= ?",
                (first, last),
            )
            extra = _deltas(self.store.snapshot().counters, baseline.persisted) if live else []
        grouped: dict[int, list[Series]] = {start: [] for start in range(first, last + 1, BUCKET_S)}
        for start, name, labels, value in rows:
            grouped[int(start)].append(Series(name, json.loads(labels), value))
        grouped[last].extend(extra)
        return [
            {
                "start": datetime.fromtimestamp(start, UTC).isoformat(),
                "timestamp": start,
                **point_of(series),
            }
            for start, series in grouped.items()
        ]

    def last_persist(self) -> dict[str, Any] | None:
        """The latest write: when, by which process id and host, how many series."""
        rows = self._rows("SELECT at, pid, host, series FROM persists ORDER BY at DESC LIMIT 1")
        if not rows:
            return None
        at, pid, host, count = rows[0]
        return {
            "at": datetime.fromtimestamp(at, UTC).isoformat(),
            "pid": pid,
            "host": host,
            "series": count,
        }

    def stored_buckets(self) -> int:
        """How many distinct 5-minute buckets the file holds."""
        rows = self._rows("SELECT COUNT(DISTINCT start) FROM buckets")
        return int(rows[0][0]) if rows else 0
