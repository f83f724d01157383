"""The metrics API of the package, at its bottom: OpenTelemetry instruments and their readers.

Every layer records here (``get_metrics().inc(...)``); this module imports nothing of ours, so
``models/`` counts calls without importing ``observability/`` (a test of imports keeps it so).

One :class:`MetricsStore` wraps one OpenTelemetry SDK ``MeterProvider``:

- counters are OTel ``Counter`` instruments, latencies an OTel ``Histogram``, gauges set by
  value an OTel ``Gauge``; gauges describing live objects (a limiter's in-flight count) are
  OTel ``ObservableGauge`` callbacks over registered *collectors*;
- an ``InMemoryMetricReader`` (pull) gives :meth:`MetricsStore.snapshot`, which the history,
  the summary, ``/metrics`` and the dashboard read;
- the process-wide store (:func:`get_metrics`) also has a ``PeriodicExportingMetricReader``
  whose exporter hands each collection to registered *sinks* (the SQLite history plugs in): it
  exports every ``MULTIAGENT_METRICS_EXPORT_S`` seconds (default 300) and once more when the
  provider shuts down at interpreter exit, so a short CLI process loses nothing;
- with ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``..._METRICS_ENDPOINT``) set, an OTLP exporter
  (``http/protobuf``, or ``grpc`` by ``OTEL_EXPORTER_OTLP_[METRICS_]PROTOCOL``) on a periodic
  reader, configured by the standard OpenTelemetry variables.

Names recorded by the model pipeline (all prefixed ``multiagent_``):

- ``model_calls_total{provider,model,agent,outcome}`` (``ok``, ``error`` or ``cached``);
- ``model_tokens_total{model,direction}``, ``model_cost_usd_total{model}``;
- ``model_latency_seconds{model}`` (histogram: ``_sum``, ``_count`` and ``_bucket{le}``);
- ``model_errors_total{model,kind}``, ``model_retries_total{model,kind}``;
- ``completion_cache_{hits,misses}_total``, ``analysis_cache_{hits,misses,expired}_total{kind}``;
- ``pii_redactions_total{kind}``; gauges ``backpressure_*{provider,model}`` of live limiters.
"""

from __future__ import annotations

import itertools
import math
import os
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from opentelemetry.metrics import CallbackOptions, Counter, Histogram, Observation
from opentelemetry.metrics import _Gauge as Gauge  # the synchronous gauge (API 1.23+)
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    HistogramDataPoint,
    InMemoryMetricReader,
    MetricExporter,
    MetricExportResult,
    MetricReader,
    MetricsData,
    NumberDataPoint,
    PeriodicExportingMetricReader,
    Sum,
)

Labels = tuple[tuple[str, str], ...]
#: A gauge sample a collector reports: name, labels, value.
Sample = tuple[str, Mapping[str, str], float]
Collector = Callable[[], Iterable[Sample]]

PREFIX = "multiagent_"
METER_NAME = "multiagent"
#: Latency histogram bounds, seconds: enough resolution for p50/p95 of model calls.
LATENCY_BOUNDS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_EXPORT_ENV = "MULTIAGENT_METRICS_EXPORT_S"


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


Sink = Callable[[MetricsSnapshot], None]


class _SinkExporter(MetricExporter):
    """Hands every periodic (and the final) collection to the store's sinks."""

    def __init__(self, store: MetricsStore) -> None:
        super().__init__(preferred_temporality=dict.fromkeys(_ALL_KINDS, _CUMULATIVE))
        self._store = store

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> MetricExportResult:
        """Give the collection to each sink; a failing sink fails the export, not the others."""
        snapshot = snapshot_of(metrics_data)
        ok = True
        for sink in self._store.sinks():
            try:
                sink(snapshot)
            except Exception:  # a sink's failure must not stop the reader thread
                ok = False
        return MetricExportResult.SUCCESS if ok else MetricExportResult.FAILURE

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        """Nothing is buffered."""
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        """Nothing to release."""


_CUMULATIVE = AggregationTemporality.CUMULATIVE
_ALL_KINDS: tuple[type, ...] = ()  # filled below from the SDK's instrument classes


def _otlp_reader() -> MetricReader | None:
    """An OTLP reader when the standard OpenTelemetry variables name an endpoint."""
    endpoint = os.environ.get("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT") or os.environ.get(
        "OTEL_EXPORTER_OTLP_ENDPOINT"
    )
    if not endpoint or os.environ.get("OTEL_METRICS_EXPORTER", "otlp").strip() == "none":
        return None
    protocol = os.environ.get("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL") or os.environ.get(
        "OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"
    )
    exporter: MetricExporter
    if protocol.strip() == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter

        exporter = OTLPMetricExporter()
    else:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
            OTLPMetricExporter as HttpExporter,
        )

        exporter = HttpExporter()
    return PeriodicExportingMetricReader(exporter)


class MetricsStore:
    """OpenTelemetry instruments of one meter provider, read back as counters and gauges.

    Names are stored with the ``multiagent_`` prefix; callers may give them with or without it.

    Args:
        export_interval_s: When given, a periodic reader hands collections to the sinks
            (:meth:`add_sink`) at this interval and once more at shutdown.
        readers: Builders of more OpenTelemetry readers (OTLP) for the provider; called again
            by :meth:`reset`, since a reader serves one provider only.
    """

    def __init__(
        self,
        *,
        export_interval_s: float | None = None,
        readers: Sequence[Callable[[], MetricReader | None]] = (),
    ) -> None:
        self._lock = threading.Lock()
        self._export_interval_s = export_interval_s
        self._extra_readers = list(readers)
        self._collectors: dict[int, Collector] = {}
        self._sinks: dict[int, Sink] = {}
        self._tokens = itertools.count()
        self._build()

    def _build(self) -> None:
        """A fresh provider, its readers and (empty) instrument caches."""
        self._reader = InMemoryMetricReader()
        built = (make() for make in self._extra_readers)
        readers: list[MetricReader] = [self._reader, *(r for r in built if r is not None)]
        if self._export_interval_s is not None:
            readers.append(
                PeriodicExportingMetricReader(
                    _SinkExporter(self), export_interval_millis=self._export_interval_s * 1000
                )
            )
        self._provider = MeterProvider(metric_readers=readers)
        self._meter = self._provider.get_meter(METER_NAME)
        self._counters: dict[str, Counter] = {}
        self._histograms: dict[str, Histogram] = {}
        self._gauges: dict[str, Gauge] = {}
        self._observed: set[str] = set()
        for collector in list(self._collectors.values()):
            self._observe(collector)

    def inc(
        self, name: str, *, value: float = 1.0, labels: Mapping[str, str] | None = None
    ) -> None:
        """Add ``value`` (default 1) to the counter ``name`` with ``labels``.

        Raises:
            ValueError: ``value`` is negative; counters only go up.
        """
        if value < 0:
            raise ValueError(f"counter {name!r} cannot go down (value {value})")
        key = full_name(name)
        with self._lock:
            counter = self._counters.get(key)
            if counter is None:
                counter = self._counters[key] = self._meter.create_counter(key)
        counter.add(value, attributes=dict(_labels(labels)))

    def observe(self, name: str, *, value: float, labels: Mapping[str, str] | None = None) -> None:
        """Record ``value`` (seconds) into the histogram ``name`` with ``labels``."""
        key = full_name(name)
        with self._lock:
            histogram = self._histograms.get(key)
            if histogram is None:
                histogram = self._histograms[key] = self._meter.create_histogram(
                    key, unit="s", explicit_bucket_boundaries_advisory=LATENCY_BOUNDS_S
                )
        histogram.record(value, attributes=dict(_labels(labels)))

    def set_gauge(
        self, name: str, *, value: float, labels: Mapping[str, str] | None = None
    ) -> None:
        """Set the gauge ``name`` with ``labels`` to ``value``."""
        key = full_name(name)
        with self._lock:
            gauge = self._gauges.get(key)
            if gauge is None:
                gauge = self._gauges[key] = self._meter.create_gauge(key)
        gauge.set(float(value), attributes=dict(_labels(labels)))

    def counter(self, name: str, *, labels: Mapping[str, str] | None = None) -> float:
        """Return the counter ``name`` with exactly ``labels`` (0 when never incremented)."""
        wanted = (full_name(name), _labels(labels))
        for series in self.snapshot().counters:
            if (series.name, _labels(series.labels)) == wanted:
                return series.value
        return 0.0

    def gauge(self, name: str, *, labels: Mapping[str, str] | None = None) -> float | None:
        """Return the gauge ``name`` with exactly ``labels``, collectors included, or ``None``."""
        wanted = (full_name(name), _labels(labels))
        for series in self.snapshot().gauges:
            if (series.name, _labels(series.labels)) == wanted:
                return series.value
        return None

    def _observe(self, collector: Collector) -> None:
        """An observable gauge for every name the collector reports that has none yet."""
        for name in {full_name(sample[0]) for sample in _safe(collector)}:
            if name in self._observed:
                continue
            self._observed.add(name)
            self._meter.create_observable_gauge(name, callbacks=[self._callback(name)])

    def _callback(self, name: str) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def observe(options: CallbackOptions) -> Iterable[Observation]:
            with self._lock:
                collectors = list(self._collectors.values())
            return [
                Observation(float(value), dict(_labels(labels)))
                for collector in collectors
                for sample_name, labels, value in _safe(collector)
                if full_name(sample_name) == name
            ]

        return observe

    def add_collector(self, collector: Collector) -> Callable[[], None]:
        """Register a callable whose gauge samples join every collection; return its remover."""
        with self._lock:
            token = next(self._tokens)
            self._collectors[token] = collector
            self._observe(collector)

        def remove() -> None:
            with self._lock:
                self._collectors.pop(token, None)

        return remove

    def add_sink(self, sink: Sink) -> Callable[[], None]:
        """Register a callable given every periodic collection (and the last); return its
        remover. Only a store built with ``export_interval_s`` calls sinks."""
        with self._lock:
            token = next(self._tokens)
            self._sinks[token] = sink

        def remove() -> None:
            with self._lock:
                self._sinks.pop(token, None)

        return remove

    def sinks(self) -> list[Sink]:
        """The registered sinks."""
        with self._lock:
            return list(self._sinks.values())

    def snapshot(self) -> MetricsSnapshot:
        """Every counter and gauge now, sorted by name and labels."""
        return snapshot_of(self._reader.get_metrics_data())

    def reset(self) -> None:
        """Forget every count: a new provider (collectors stay registered; sinks are dropped,
        so the old provider's last export writes nowhere)."""
        with self._lock:
            self._sinks.clear()
            old = self._provider
            self._build()
        old.shutdown()


def _safe(collector: Collector) -> list[Sample]:
    """A collector's samples; none when it fails (a limiter's Redis gone must not stop a
    collection of everything else)."""
    try:
        return list(collector())
    except Exception:
        return []


def _instrument_kinds() -> tuple[type, ...]:
    from opentelemetry.sdk.metrics import (
        Counter as SdkCounter,
    )
    from opentelemetry.sdk.metrics import (
        Histogram as SdkHistogram,
    )
    from opentelemetry.sdk.metrics import (
        ObservableCounter,
        ObservableGauge,
        ObservableUpDownCounter,
        UpDownCounter,
    )
    from opentelemetry.sdk.metrics import _Gauge as SdkGauge

    return (
        SdkCounter,
        SdkHistogram,
        ObservableCounter,
        ObservableGauge,
        ObservableUpDownCounter,
        UpDownCounter,
        SdkGauge,
    )


_ALL_KINDS = _instrument_kinds()


def _export_interval() -> float:
    raw = os.environ.get(_EXPORT_ENV, "300")
    try:
        value = float(raw)
    except ValueError:
        return 300.0
    return value if value > 0 else 300.0


_STORE = MetricsStore(export_interval_s=_export_interval(), readers=[_otlp_reader])


def get_metrics() -> MetricsStore:
    """Return the process-wide metrics store."""
    return _STORE
