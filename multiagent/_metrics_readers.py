"""The readers of the process's metrics beyond the in-memory one: sinks and OTLP.

:class:`SinkExporter` sits on a ``PeriodicExportingMetricReader`` and hands each collection to
the sinks a store has (the SQLite history); :func:`otlp_reader` exports to an OTLP endpoint
named by the standard OpenTelemetry variables, its exit bounded by :mod:`multiagent._otlp`.
Imports nothing of ours above the data module and the OTLP rules.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any

from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    MetricExporter,
    MetricExportResult,
    MetricReader,
    MetricsData,
    PeriodicExportingMetricReader,
)

from multiagent._metrics_data import MetricsSnapshot, snapshot_of
from multiagent._otlp import Delivery, close_within, exit_wait_s, otlp_endpoint, otlp_protocol

Sink = Callable[[MetricsSnapshot], None]


class SinkExporter(MetricExporter):
    """Hands every periodic (and the final) collection to the sinks ``sinks()`` returns."""

    def __init__(self, sinks: Callable[[], list[Sink]]) -> None:
        super().__init__(preferred_temporality=dict.fromkeys(_instrument_kinds(), _CUMULATIVE))
        self._sinks = sinks

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> MetricExportResult:
        """Give the collection to each sink; a failing sink fails the export, not the others."""
        snapshot = snapshot_of(metrics_data)
        ok = True
        for sink in self._sinks():
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


def otlp_reader() -> MetricReader | None:
    """An OTLP reader when the standard OpenTelemetry variables name an endpoint.

    Its shutdown (at exit) gives the final export at most a few seconds
    (:func:`~multiagent._otlp.close_within`); what was not delivered is reported at exit.

    Raises:
        ConfigError: ``OTEL_EXPORTER_OTLP_METRICS_PROTOCOL`` (or ``OTEL_EXPORTER_OTLP_PROTOCOL``)
            is neither ``http/protobuf`` nor ``grpc``.
    """
    env = os.environ
    general = env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    specific = env.get("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT")
    if not (specific or general) or env.get("OTEL_METRICS_EXPORTER", "otlp").strip() == "none":
        return None
    protocol = otlp_protocol(
        ("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", env.get("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL")),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", env.get("OTEL_EXPORTER_OTLP_PROTOCOL")),
    )
    endpoint = otlp_endpoint(protocol, specific=specific, general=str(general), path="/v1/metrics")
    exporter: MetricExporter
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter

        exporter = OTLPMetricExporter(endpoint=endpoint)
    else:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
            OTLPMetricExporter as HttpExporter,
        )

        exporter = HttpExporter(endpoint=endpoint)
    wait_s = exit_wait_s(
        env.get("OTEL_EXPORTER_OTLP_METRICS_TIMEOUT"), env.get("OTEL_EXPORTER_OTLP_TIMEOUT")
    )
    delivery = Delivery(what="metrics", endpoint=endpoint, wait_s=wait_s)
    return _OtlpMetricReader(_DeliveredMetrics(exporter, delivery), delivery)


class _DeliveredMetrics(MetricExporter):
    """An OTLP metric exporter whose exports a :class:`~multiagent._otlp.Delivery` accounts."""

    def __init__(self, exporter: MetricExporter, delivery: Delivery) -> None:
        # MetricExporter offers its preferences only as these attributes, which the SDK's own
        # reader reads; handing them on keeps the OTLP exporter's temporality and histogram
        # aggregation (OTEL_EXPORTER_OTLP_METRICS_*) for this wrapper
        super().__init__(
            preferred_temporality=exporter._preferred_temporality,
            preferred_aggregation=exporter._preferred_aggregation,
        )
        self._exporter = exporter
        self._delivery = delivery
        self._stopped = threading.Event()

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> MetricExportResult:
        """Export through the OTLP exporter; nothing once it is shut down."""
        with self._delivery.exporting(1) as outcome:
            if self._stopped.is_set():  # a failed export, counted
                return MetricExportResult.FAILURE
            result = self._exporter.export(metrics_data, timeout_millis=timeout_millis, **kwargs)
            outcome[0] = result is MetricExportResult.SUCCESS
        return result

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        """The OTLP exporter's flush."""
        return self._exporter.force_flush(timeout_millis=timeout_millis)

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        """Shut the OTLP exporter down once (interrupting its retries)."""
        if not self._stopped.is_set():
            self._stopped.set()
            self._exporter.shutdown()


class _OtlpMetricReader(PeriodicExportingMetricReader):
    """The SDK's periodic reader, its shutdown's final export bounded."""

    def __init__(self, exporter: _DeliveredMetrics, delivery: Delivery) -> None:
        super().__init__(exporter)
        self._delivered = exporter
        self._delivery = delivery

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        """Export once more, for at most the delivery's wait, then stop the exporter."""
        close_within(
            self._delivery,
            lambda: super(_OtlpMetricReader, self).shutdown(timeout_millis, **kwargs),
            stop=self._delivered.shutdown,
        )


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
