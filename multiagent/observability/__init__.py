"""Observability: the metrics store and its history, the metrics server, tracing.

Names load on first use: the model pipeline imports the metrics store on every run, and must not
pay for the HTTP server or the OpenTelemetry SDK.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from multiagent._lazy import lazy_exports

if TYPE_CHECKING:
    from multiagent._metrics import MetricsStore as MetricsStore
    from multiagent._metrics import get_metrics as get_metrics
    from multiagent.observability.cache_stats import cache_analytics as cache_analytics
    from multiagent.observability.exposition import render_prometheus as render_prometheus
    from multiagent.observability.history import MetricsHistory as MetricsHistory
    from multiagent.observability.history import PersistResult as PersistResult
    from multiagent.observability.history import (
        metrics_persist_hook as metrics_persist_hook,
    )
    from multiagent.observability.history import persist_metrics as persist_metrics
    from multiagent.observability.otel import (
        OpenTelemetryCallbackHandler as OpenTelemetryCallbackHandler,
    )
    from multiagent.observability.server import create_metrics_app as create_metrics_app
    from multiagent.observability.server import metrics_summary as metrics_summary
    from multiagent.observability.server import run_metrics_server as run_metrics_server
    from multiagent.observability.summary import summarize as summarize
    from multiagent.observability.tracing import Tracing as Tracing
    from multiagent.observability.tracing import TracingEnvironment as TracingEnvironment
    from multiagent.observability.tracing import configure_tracing as configure_tracing
    from multiagent.observability.tracing import run_config as run_config
    from multiagent.observability.tracing import shutdown_tracing as shutdown_tracing

_EXPORTS: dict[str, str] = {
    "MetricsHistory": "multiagent.observability.history",
    "MetricsStore": "multiagent._metrics",
    "OpenTelemetryCallbackHandler": "multiagent.observability.otel",
    "PersistResult": "multiagent.observability.history",
    "Tracing": "multiagent.observability.tracing",
    "TracingEnvironment": "multiagent.observability.tracing",
    "cache_analytics": "multiagent.observability.cache_stats",
    "configure_tracing": "multiagent.observability.tracing",
    "create_metrics_app": "multiagent.observability.server",
    "get_metrics": "multiagent._metrics",
    "metrics_persist_hook": "multiagent.observability.history",
    "metrics_summary": "multiagent.observability.server",
    "persist_metrics": "multiagent.observability.history",
    "render_prometheus": "multiagent.observability.exposition",
    "run_config": "multiagent.observability.tracing",
    "run_metrics_server": "multiagent.observability.server",
    "shutdown_tracing": "multiagent.observability.tracing",
    "summarize": "multiagent.observability.summary",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
