"""The metrics API of the package, at its bottom: OpenTelemetry instruments and their readers.

Every layer records here (``get_metrics().inc(...)``); this module imports nothing of ours, so
``models/`` counts calls without importing ``observability/`` (a test of imports keeps it so).

One :class:`MetricsStore` wraps one OpenTelemetry SDK ``MeterProvider``:

- counters are OTel ``ObservableCounter`` instruments over running totals kept here: an
  increment adds to a dict under a lock (about 1 µs, where a synchronous ``Counter.add`` walks
  the SDK's measurement, attribute and per-reader storage path, about 12 µs — and the model
  pipeline counts five or six times per call); each collection reports the totals, which is
  what a cumulative OTel sum holds either way. Latencies are an OTel ``Histogram``, gauges
  set by value an OTel ``Gauge``; gauges describing live objects (a limiter's in-flight
  count) are OTel ``ObservableGauge`` callbacks over registered *collectors*;
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

- ``model_calls_total{provider,model,agent,outcome}`` (``ok``, ``error``, ``cached`` or
  ``cancelled``);
- ``model_tokens_total{model,direction}``, ``model_cost_usd_total{model}``,
  ``model_saved_usd_total{model}`` (what cache hits would have cost);
- ``model_latency_seconds{model}`` (histogram: ``_sum``, ``_count`` and ``_bucket{le}``);
- ``model_errors_total{model,kind}``, ``model_retries_total{model,kind}``;
- ``completion_cache_{hits,misses}_total``, ``analysis_cache_{hits,misses,expired}_total{kind}``;
- ``pii_redactions_total{kind}``; gauges ``backpressure_*{provider,model}`` of live limiters.
"""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence

from opentelemetry.metrics import CallbackOptions, Histogram, Observation
from opentelemetry.metrics import _Gauge as Gauge  # the synchronous gauge (API 1.23+)
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    InMemoryMetricReader,
    MetricReader,
    PeriodicExportingMetricReader,
)

from multiagent._metrics_data import (
    PREFIX,
    Collector,
    Labels,
    MetricsSnapshot,
    Sample,
    Series,
    _labels,
    full_name,
    snapshot_of,
)
from multiagent._metrics_readers import Sink, SinkExporter, otlp_reader

__all__ = [
    "PREFIX",
    "Collector",
    "Labels",
    "MetricsSnapshot",
    "MetricsStore",
    "Sample",
    "Series",
    "full_name",
    "get_metrics",
    "snapshot_of",
]

METER_NAME = "multiagent"
#: Latency histogram bounds, seconds: enough resolution for p50/p95 of model calls.
#: Histogram values kept before they are handed to their instruments without a collection.
OBSERVED_BUFFER = 4096
LATENCY_BOUNDS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_EXPORT_ENV = "MULTIAGENT_METRICS_EXPORT_S"


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
        # held while an instrument is created, never by a collection's callbacks: creating one
        # takes the SDK's collection lock, and a callback waiting for ``_lock`` meanwhile would
        # wait for a thread that waits for it
        self._create_lock = threading.Lock()
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
                    SinkExporter(self.sinks), export_interval_millis=self._export_interval_s * 1000
                )
            )
        # histogram values wait here until a reader collects (see ``observe``)
        self._observed_values: list[tuple[Histogram, Labels, float]] = []
        for reader in readers:
            _drain_before_collecting(reader, self._drain)
        self._provider = MeterProvider(metric_readers=readers)
        self._meter = self._provider.get_meter(METER_NAME)
        # name -> labels -> running total (read by the name's ObservableCounter callback)
        self._totals: dict[str, dict[Labels, float]] = {}
        self._histograms: dict[str, Histogram] = {}
        self._gauges: dict[str, Gauge] = {}
        self._observed: set[str] = set()

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
        series = _labels(labels) if labels else ()
        totals = self._totals.get(key)
        if totals is None:
            totals = self._counted(key)
        with self._lock:
            totals[series] = totals.get(series, 0) + value

    def _counted(self, key: str) -> dict[Labels, float]:
        """The running totals of counter ``key``, its ObservableCounter created on first use."""
        with self._create_lock:
            totals = self._totals.get(key)
            if totals is not None:
                return totals
            totals = {}

            def observe(options: CallbackOptions) -> Iterable[Observation]:
                with self._lock:
                    counted = list(totals.items())
                return [Observation(value, dict(series)) for series, value in counted]

            self._meter.create_observable_counter(key, callbacks=[observe])
            self._totals[key] = totals  # published once its instrument reports it
            return totals

    def observe(self, name: str, *, value: float, labels: Mapping[str, str] | None = None) -> None:
        """Record ``value`` (seconds) into the histogram ``name`` with ``labels``."""
        key = full_name(name)
        histogram = self._histograms.get(key)
        if histogram is None:
            with self._create_lock:
                histogram = self._histograms.get(key)
                if histogram is None:
                    histogram = self._histograms[key] = self._meter.create_histogram(
                        key, unit="s", explicit_bucket_boundaries_advisory=LATENCY_BOUNDS_S
                    )
        # a record into the SDK's histogram costs ~10 µs (attribute hashing, bucket search,
        # locks) on every model call; an append costs well under one, and every reader's
        # collection hands the values over first, so each collection sees them all
        series = _labels(labels) if labels else ()
        with self._lock:
            self._observed_values.append((histogram, series, value))
            full = len(self._observed_values) >= OBSERVED_BUFFER
        if full:
            self._drain()

    def _drain(self) -> None:
        """Record the buffered histogram values into their instruments."""
        with self._lock:
            values, self._observed_values = self._observed_values, []
        for histogram, series, value in values:
            histogram.record(value, attributes=dict(series))

    def set_gauge(
        self, name: str, *, value: float, labels: Mapping[str, str] | None = None
    ) -> None:
        """Set the gauge ``name`` with ``labels`` to ``value``."""
        key = full_name(name)
        with self._create_lock:
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

    def _observe(self, collectors: Iterable[Collector]) -> None:
        """An observable gauge for every name the collectors report that has none yet.

        The collectors are asked for their names before ``_create_lock`` is taken (a collector
        may record a metric of its own, which takes that lock), and never under ``_lock``: see
        ``__init__``.
        """
        names = {full_name(sample[0]) for collector in collectors for sample in _safe(collector)}
        with self._create_lock:
            for name in sorted(names - self._observed):
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
        self._observe([collector])

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
        with self._create_lock, self._lock:
            self._sinks.clear()
            old = self._provider
            self._build()
            collectors = list(self._collectors.values())
        self._observe(collectors)
        old.shutdown()


def _drain_before_collecting(reader: MetricReader, drain: Callable[[], None]) -> None:
    """Have every collection of ``reader`` (in-memory reads, periodic and final exports) hand
    over the buffered histogram values first."""
    collect = reader.collect

    def collect_drained(timeout_millis: float = 10_000) -> None:
        drain()
        collect(timeout_millis=timeout_millis)

    reader.collect = collect_drained  # type: ignore[method-assign,misc]


def _safe(collector: Collector) -> list[Sample]:
    """A collector's samples; none when it fails (a limiter's Redis gone must not stop a
    collection of everything else)."""
    try:
        return list(collector())
    except Exception:
        return []


def _export_interval() -> float:
    raw = os.environ.get(_EXPORT_ENV, "300")
    try:
        value = float(raw)
    except ValueError:
        return 300.0
    return value if value > 0 else 300.0


_STORE = MetricsStore(export_interval_s=_export_interval(), readers=[otlp_reader])


def get_metrics() -> MetricsStore:
    """Return the process-wide metrics store."""
    return _STORE
