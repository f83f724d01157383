"""Counters and gauges as plain data: what one OpenTelemetry collection holds.

:class:`Series` and :class:`MetricsSnapshot` are what the history, the summary and ``/metrics``
read; :func:`snapshot_of` turns the SDK's ``MetricsData`` into them (histograms become
``_sum``/``_count``/``_bucket{le}`` series, as Prometheus names them). Imports nothing of ours.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from opentelemetry.sdk.metrics.export import (
    HistogramDataPoint,
    MetricsData,
    NumberDataPoint,
    Sum,
)

Labels = tuple[tuple[str, str], ...]
#: A gauge sample a collector reports: name, labels, value.
Sample = tuple[str, Mapping[str, str], float]
Collector = Callable[[], Iterable[Sample]]

PREFIX = "multiagent_"


def _labels(labels: Mapping[str, Any] | None) -> Labels:
    return tuple(sorted((str(k), str(v)) for k, v in (labels or {}).items()))


def full_name(name: str) -> str:
    """``name`` with the ``multiagent_`` prefix."""
    return name if name.startswith(PREFIX) else PREFIX + name


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
    """Every counter and gauge at one moment (histograms as ``_sum``/``_count``/``_bucket``)."""

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
            if s.name == full_name(name) and all(s.labels.get(k) == v for k, v in labels.items())
        )


def snapshot_of(data: MetricsData | None) -> MetricsSnapshot:
    """Counters and gauges of one OpenTelemetry collection (cumulative sums expected)."""
    counters: dict[tuple[str, Labels], float] = {}
    gauges: dict[tuple[str, Labels], float] = {}
    for resource in data.resource_metrics if data is not None else ():
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                _add_metric(metric.name, metric.data, counters, gauges)
    return MetricsSnapshot(
        counters=[Series(n, dict(lb), v) for (n, lb), v in sorted(counters.items())],
        gauges=[Series(n, dict(lb), v) for (n, lb), v in sorted(gauges.items())],
    )


def _add_metric(
    name: str,
    data: Any,
    counters: dict[tuple[str, Labels], float],
    gauges: dict[tuple[str, Labels], float],
) -> None:
    for point in data.data_points:
        labels = _labels(point.attributes)
        if isinstance(point, HistogramDataPoint):
            counters[(f"{name}_sum", labels)] = float(point.sum)
            counters[(f"{name}_count", labels)] = float(point.count)
            running = 0
            bounds = [*point.explicit_bounds, math.inf]
            for bound, count in zip(bounds, point.bucket_counts, strict=False):
                running += count
                le = "+Inf" if math.isinf(bound) else repr(float(bound))
                key = (f"{name}_bucket", tuple(sorted((*labels, ("le", le)))))
                counters[key] = float(running)
        elif isinstance(point, NumberDataPoint):
            target = counters if isinstance(data, Sum) and data.is_monotonic else gauges
            target[(name, labels)] = float(point.value)
