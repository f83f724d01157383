"""The process-wide metrics store: counters and gauges the pipeline records into.

One :class:`MetricsStore` per process (:func:`get_metrics`). Every series is a name plus a set of
labels, the Prometheus data model, so an HTTP exporter can render :meth:`MetricsStore.snapshot`
as it is. Gauges that describe live objects (a limiter's in-flight count) are better read when
asked for than pushed on every change: such objects register a *collector*, a callable that
returns their current samples, and :meth:`MetricsStore.snapshot` calls it.

Names recorded by the model pipeline (all prefixed ``multiagent_``):

- ``model_calls_total{provider,model,agent,outcome}``: ``outcome`` is ``ok``, ``error`` or
  ``cached``.
- ``model_tokens_total{model,direction}``, ``model_cost_usd_total{model}``,
  ``model_latency_seconds_sum{model}`` and ``model_latency_seconds_count{model}``.
- ``model_errors_total{model,kind}`` and ``model_retries_total{model,kind}``, ``kind`` being
  ``rate_limit``, ``server``, ``timeout``, ``connection``, ``client`` or ``other``.
- ``completion_cache_hits_total``, ``completion_cache_misses_total``.
- ``analysis_cache_{hits,misses,expired}_total{kind}``.
- ``pii_redactions_total{kind}``.
- gauges ``backpressure_*{provider,model}`` from every live limiter (see
  :meth:`multiagent.models.backpressure.BackpressureController.samples`).
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

Labels = tuple[tuple[str, str], ...]
#: A gauge sample a collector reports: name, labels, value.
Sample = tuple[str, Mapping[str, str], float]
Collector = Callable[[], Iterable[Sample]]

PREFIX = "multiagent_"


def _labels(labels: Mapping[str, str] | None) -> Labels:
    return tuple(sorted((str(k), str(v)) for k, v in (labels or {}).items()))


@dataclass(frozen=True)
class Series:
    """One value of one metric."""

    name: str
    labels: dict[str, str]
    value: float

    def as_dict(self) -> dict[str, Any]:
        """Return the series as JSON-ready data."""
        return {"name": self.name, "labels": self.labels, "value": self.value}


@dataclass(frozen=True)
class MetricsSnapshot:
    """Every counter and gauge at one moment."""

    counters: list[Series]
    gauges: list[Series]

    def as_dict(self) -> dict[str, Any]:
        """Return the snapshot as JSON-ready data."""
        return {
            "counters": [s.as_dict() for s in self.counters],
            "gauges": [s.as_dict() for s in self.gauges],
        }

    def total(self, name: str, **labels: str) -> float:
        """Sum the counters called ``name`` whose labels include ``labels``."""
        return sum(
            s.value
            for s in self.counters
            if s.name == _full(name) and all(s.labels.get(k) == v for k, v in labels.items())
        )


def _full(name: str) -> str:
    return name if name.startswith(PREFIX) else PREFIX + name


class MetricsStore:
    """Thread-safe counters and gauges keyed by name and labels.

    Names are stored with the ``multiagent_`` prefix; callers may give them with or without it.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counters: dict[tuple[str, Labels], float] = {}
        self._gauges: dict[tuple[str, Labels], float] = {}
        self._collectors: dict[int, Collector] = {}
        self._tokens = itertools.count()

    def inc(
        self, name: str, *, value: float = 1.0, labels: Mapping[str, str] | None = None
    ) -> None:
        """Add ``value`` (default 1) to the counter ``name`` with ``labels``.

        Raises:
            ValueError: ``value`` is negative; counters only go up.
        """
        if value < 0:
            raise ValueError(f"counter {name!r} cannot go down (value {value})")
        key = (_full(name), _labels(labels))
        with self._lock:
            self._counters[key] = self._counters.get(key, 0.0) + value

    def set_gauge(
        self, name: str, *, value: float, labels: Mapping[str, str] | None = None
    ) -> None:
        """Set the gauge ``name`` with ``labels`` to ``value``."""
        with self._lock:
            self._gauges[(_full(name), _labels(labels))] = float(value)

    def counter(self, name: str, *, labels: Mapping[str, str] | None = None) -> float:
        """Return the counter ``name`` with exactly ``labels`` (0 when never incremented)."""
        with self._lock:
            return self._counters.get((_full(name), _labels(labels)), 0.0)

    def gauge(self, name: str, *, labels: Mapping[str, str] | None = None) -> float | None:
        """Return the gauge ``name`` with exactly ``labels``, collectors included, or ``None``."""
        wanted = (_full(name), _labels(labels))
        for series in self.snapshot().gauges:
            if (series.name, _labels(series.labels)) == wanted:
                return series.value
        return None

    def add_collector(self, collector: Collector) -> Callable[[], None]:
        """Register a callable whose gauge samples join every snapshot; return its remover."""
        with self._lock:
            token = next(self._tokens)
            self._collectors[token] = collector

        def remove() -> None:
            with self._lock:
                self._collectors.pop(token, None)

        return remove

    def snapshot(self) -> MetricsSnapshot:
        """Return every counter and gauge, sorted by name and labels."""
        with self._lock:
            counters = dict(self._counters)
            gauges = dict(self._gauges)
            collectors = list(self._collectors.values())
        for collector in collectors:
            for name, labels, value in collector():
                gauges[(_full(name), _labels(labels))] = float(value)
        return MetricsSnapshot(
            counters=[Series(n, dict(lb), v) for (n, lb), v in sorted(counters.items())],
            gauges=[Series(n, dict(lb), v) for (n, lb), v in sorted(gauges.items())],
        )

    def reset(self) -> None:
        """Forget every counter and gauge (collectors stay registered)."""
        with self._lock:
            self._counters.clear()
            self._gauges.clear()


_STORE = MetricsStore()


def get_metrics() -> MetricsStore:
    """Return the process-wide metrics store."""
    return _STORE
