"""The readers of the process's metrics beyond the in-memory one: sinks and OTLP.

:class:`SinkExporter` sits on a ``PeriodicExportingMetricReader`` and hands each collection to
the sinks a store has (the SQLite history); :func:`otlp_reader` exports to an OTLP endpoint
named by the standard OpenTelemetry variables. Imports nothing of ours above the data module.
"""

from __future__ import annotations

import os
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
