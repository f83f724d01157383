"""``/metrics``: counters, histograms and gauges handed to ``prometheus_client`` for exposition.

The text format (HELP/TYPE lines, escaping, ``_total``/``_bucket`` naming) is
``prometheus_client``'s; this module only groups :class:`~multiagent._metrics.Series` into its
metric families: ``*_total`` series are counters, ``X_bucket``/``X_sum``/``X_count`` triples are
one histogram ``X``, gauges are gauges.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from multiagent._metrics import PREFIX, Series

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_HELP: dict[str, str] = {
    "model_calls_total": (
        "Model calls by provider, model, agent and outcome (ok, error, cached, cancelled)."
    ),
    "model_tokens_total": "Tokens sent to (input) and received from (output) the provider.",
    "model_cost_usd_total": "Cost of answered model calls, in USD.",
    "model_saved_usd_total": "What cache hits would have cost had they been sent, in USD.",
    "model_latency_seconds": "Latency of answered model calls.",
    "model_errors_total": "Model calls that failed after their last attempt, by error kind.",
    "model_retries_total": "Retried model call attempts, by error kind.",
    "backpressure_limit": "Requests the adaptive limiter lets in flight now.",
    "backpressure_in_flight": "Requests in flight through the adaptive limiter.",
    "cache_entries": "Entries stored in a cache (all processes).",
}


def _help(name: str) -> str:
    short = name.removeprefix(PREFIX)
    return _HELP.get(short, f"multiagent metric {short}.")


class _SeriesCollector(Collector):
    """One scrape's series as ``prometheus_client`` metric families."""

    def __init__(self, counters: list[Series], gauges: list[Series]) -> None:
        self.counters = counters
        self.gauges = gauges

    def collect(self) -> Iterator[Metric]:
        histograms = {
            s.name.removesuffix("_bucket") for s in self.counters if s.name.endswith("_bucket")
        }
        plain: dict[str, list[Series]] = defaultdict(list)
        parts: dict[str, list[Series]] = defaultdict(list)
        for series in self.counters:
            base = series.name.rsplit("_", 1)[0]
            (parts[base] if base in histograms else plain[series.name]).append(series)
        for name, group in sorted(plain.items()):
            yield _counter(name, group)
        for name, group in sorted(parts.items()):
            yield from _histogram(name, group)
        by_name: dict[str, list[Series]] = defaultdict(list)
        for series in self.gauges:
            by_name[series.name].append(series)
        for name, group in sorted(by_name.items()):
            keys = sorted({k for s in group for k in s.labels})
            family = GaugeMetricFamily(name, _help(name), labels=keys)
            for s in group:
                family.add_metric([s.labels.get(k, "") for k in keys], s.value)
            yield family


def _counter(name: str, group: list[Series]) -> Metric:
    keys = sorted({k for s in group for k in s.labels})
    family = CounterMetricFamily(name, _help(name), labels=keys)
    for s in group:
        family.add_metric([s.labels.get(k, "") for k in keys], s.value)
    return family


def _histogram(name: str, group: list[Series]) -> Iterable[Metric]:
    """One histogram family per metric; its label sets each with buckets, sum and count."""
    rows: dict[tuple[tuple[str, str], ...], dict[str, object]] = defaultdict(dict)
    for s in group:
        labels = tuple(sorted((k, v) for k, v in s.labels.items() if k != "le"))
        row = rows[labels]
        if s.name.endswith("_bucket"):
            row.setdefault("buckets", []).append((s.labels.get("le", "+Inf"), s.value))  # type: ignore[attr-defined]
        else:
            row[s.name.rsplit("_", 1)[1]] = s.value
    keys = sorted({k for labels in rows for k, _ in labels})
    family = HistogramMetricFamily(name, _help(name), labels=keys)
    for labels, row in sorted(rows.items()):
        buckets = sorted(row.get("buckets", []), key=lambda b: float(b[0]))  # type: ignore[call-overload]
        family.add_metric(
            [dict(labels).get(k, "") for k in keys],
            buckets=[(le, value) for le, value in buckets],
            sum_value=float(row.get("sum", 0.0)),  # type: ignore[arg-type]
        )
    yield family


def render_prometheus(counters: Iterable[Series], gauges: Iterable[Series] = ()) -> str:
    """The Prometheus text (format 0.0.4) of ``counters`` and ``gauges``, by prometheus_client.

    Args:
        counters: Counter series (cumulative), histograms as ``_bucket``/``_sum``/``_count``.
        gauges: Gauge series (current values).
    """
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_SeriesCollector(list(counters), list(gauges)))
    return generate_latest(registry).decode("utf-8")
