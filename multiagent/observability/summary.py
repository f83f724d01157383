"""What the model pipeline's counters add up to: calls, tokens, cost, errors, latency, caches.

Pure functions over :class:`~multiagent._metrics.Series` lists (the counter names
are documented in :mod:`multiagent._metrics`), used for the totals the metrics
server reports, for each 5-minute point of the history, and by ``multiagent metrics show``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from multiagent._metrics import PREFIX, Series

LabelKey = tuple[str, tuple[tuple[str, str], ...]]


def series_key(series: Series) -> LabelKey:
    """The identity of a series: its name and its sorted labels."""
    return series.name, tuple(sorted(series.labels.items()))


def merge_series(*groups: Iterable[Series]) -> list[Series]:
    """Add up series with the same name and labels; sorted by name and labels."""
    values: dict[LabelKey, float] = {}
    for group in groups:
        for series in group:
            key = series_key(series)
            values[key] = values.get(key, 0.0) + series.value
    return [Series(name, dict(labels), value) for (name, labels), value in sorted(values.items())]


def _ratio(part: float, whole: float) -> float:
    return round(part / whole, 6) if whole else 0.0


def _num(value: float) -> float | int:
    """Counts as ints, amounts rounded: JSON that reads well."""
    return int(value) if float(value).is_integer() else round(value, 8)


class _Totals:
    """Sums of the counters by name and by one label."""

    def __init__(self, counters: Iterable[Series]) -> None:
        self.items = [(s.name.removeprefix(PREFIX), s.labels, s.value) for s in counters]

    def sum(self, name: str, **labels: str) -> float:
        return sum(
            v
            for n, lb, v in self.items
            if n == name and all(lb.get(k) == want for k, want in labels.items())
        )

    def by(self, name: str, label: str, **labels: str) -> dict[str, float]:
        out: dict[str, float] = {}
        for n, lb, v in self.items:
            if n == name and label in lb and all(lb.get(k) == w for k, w in labels.items()):
                out[lb[label]] = out.get(lb[label], 0.0) + v
        return dict(sorted(out.items()))


def _calls(totals: _Totals, **labels: str) -> dict[str, Any]:
    outcomes = totals.by("model_calls_total", "outcome", **labels)
    return {
        "total": _num(sum(outcomes.values())),
        "ok": _num(outcomes.get("ok", 0.0)),
        "error": _num(outcomes.get("error", 0.0)),
        "cached": _num(outcomes.get("cached", 0.0)),
        "cancelled": _num(outcomes.get("cancelled", 0.0)),
    }


def _model_row(totals: _Totals, model: str) -> dict[str, Any]:
    tokens = totals.by("model_tokens_total", "direction", model=model)
    latency_sum = totals.sum("model_latency_seconds_sum", model=model)
    latency_count = totals.sum("model_latency_seconds_count", model=model)
    return {
        "calls": _calls(totals, model=model),
        "input_tokens": _num(tokens.get("input", 0.0)),
        "output_tokens": _num(tokens.get("output", 0.0)),
        "cost_usd": round(float(totals.sum("model_cost_usd_total", model=model)), 8),
        "saved_usd": round(float(totals.sum("model_saved_usd_total", model=model)), 8),
        "errors": _num(totals.sum("model_errors_total", model=model)),
        "retries": _num(totals.sum("model_retries_total", model=model)),
        "latency_avg_s": _ratio(latency_sum, latency_count),
    }


def summarize(counters: Iterable[Series]) -> dict[str, Any]:
    """The summary of a set of counters, as JSON-ready data.

    Args:
        counters: Counter series (cumulative totals, or the deltas of a time bucket).

    Returns:
        ``calls`` (total, ok, error, cached, cancelled: stopped by Ctrl-C), ``tokens``,
        ``cost_usd``, ``errors`` and ``retries`` (total and by kind), ``latency`` (average of
        answered calls), ``cache`` (completion and analysis hit rates), ``pii_redactions``, and
        the same per ``models`` entry and per ``agents`` entry (calls only).
    """
    totals = _Totals(counters)
    tokens = totals.by("model_tokens_total", "direction")
    latency_sum = totals.sum("model_latency_seconds_sum")
    latency_count = totals.sum("model_latency_seconds_count")
    errors = totals.by("model_errors_total", "kind")
    retries = totals.by("model_retries_total", "kind")
    c_hits = totals.sum("completion_cache_hits_total")
    c_misses = totals.sum("completion_cache_misses_total")
    a_hits = totals.sum("analysis_cache_hits_total")
    a_misses = totals.sum("analysis_cache_misses_total")
    a_expired = totals.sum("analysis_cache_expired_total")
    models = sorted(totals.by("model_calls_total", "model"))
    agents = sorted(totals.by("model_calls_total", "agent"))
    return {
        "calls": _calls(totals),
        "tokens": {
            "input": _num(tokens.get("input", 0.0)),
            "output": _num(tokens.get("output", 0.0)),
            "total": _num(sum(tokens.values())),
        },
        "cost_usd": round(float(totals.sum("model_cost_usd_total")), 8),
        "saved_usd": round(float(totals.sum("model_saved_usd_total")), 8),
        "errors": {"total": _num(sum(errors.values())), "by_kind": _nums(errors)},
        "retries": {"total": _num(sum(retries.values())), "by_kind": _nums(retries)},
        "latency": {
            "avg_s": _ratio(latency_sum, latency_count),
            "p50_s": quantile(totals.by("model_latency_seconds_bucket", "le"), 0.5),
            "p95_s": quantile(totals.by("model_latency_seconds_bucket", "le"), 0.95),
            "answered_calls": _num(latency_count),
        },
        "cache": {
            "completion": {
                "hits": _num(c_hits),
                "misses": _num(c_misses),
                "hit_rate": _ratio(c_hits, c_hits + c_misses),
            },
            "analysis": {
                "hits": _num(a_hits),
                "misses": _num(a_misses),
                "expired": _num(a_expired),
                "hit_rate": _ratio(a_hits, a_hits + a_misses + a_expired),
            },
        },
        "pii_redactions": _num(totals.sum("pii_redactions_total")),
        "models": {model: _model_row(totals, model) for model in models},
        "agents": {agent: _calls(totals, agent=agent) for agent in agents},
    }


def _nums(values: dict[str, float]) -> dict[str, float | int]:
    return {key: _num(value) for key, value in values.items()}


def quantile(buckets: dict[str, float], q: float) -> float:
    """The ``q`` quantile of a latency histogram from its cumulative bucket counts by ``le``
    (linear inside the bucket, as Prometheus' ``histogram_quantile``); 0 when empty."""
    bounds = sorted((float(le), count) for le, count in buckets.items())
    if not bounds or bounds[-1][1] <= 0:
        return 0.0
    rank = q * bounds[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in bounds:
        if count >= rank:
            if bound == float("inf"):
                return round(lower_bound, 6)
            share = (rank - lower_count) / (count - lower_count) if count > lower_count else 1.0
            return round(lower_bound + (bound - lower_bound) * share, 6)
        lower_bound, lower_count = bound, count
    return round(lower_bound, 6)


def point_of(counters: Iterable[Series]) -> dict[str, Any]:
    """The compact figures of one history point (the deltas of a 5-minute bucket)."""
    totals = _Totals(counters)
    buckets = totals.by("model_latency_seconds_bucket", "le")
    c_hits = totals.sum("completion_cache_hits_total")
    c_lookups = c_hits + totals.sum("completion_cache_misses_total")
    latency_count = totals.sum("model_latency_seconds_count")
    return {
        "calls": _num(totals.sum("model_calls_total")),
        "errors": _num(totals.sum("model_errors_total")),
        "cached": _num(totals.sum("model_calls_total", outcome="cached")),
        "input_tokens": _num(totals.sum("model_tokens_total", direction="input")),
        "output_tokens": _num(totals.sum("model_tokens_total", direction="output")),
        "cost_usd": round(float(totals.sum("model_cost_usd_total")), 8),
        "saved_usd": round(float(totals.sum("model_saved_usd_total")), 8),
        "latency_avg_s": _ratio(totals.sum("model_latency_seconds_sum"), latency_count),
        "latency_p50_s": quantile(buckets, 0.5),
        "latency_p95_s": quantile(buckets, 0.95),
        "errors_by_kind": _nums(totals.by("model_errors_total", "kind")),
        "rate_limited": _num(
            totals.sum("model_retries_total", kind="rate_limit")
            + totals.sum("model_errors_total", kind="rate_limit")
        ),
        "completion_cache_hit_rate": _ratio(c_hits, c_lookups),
        "analysis_cache_hit_rate": _ratio(
            totals.sum("analysis_cache_hits_total"),
            totals.sum("analysis_cache_hits_total")
            + totals.sum("analysis_cache_misses_total")
            + totals.sum("analysis_cache_expired_total"),
        ),
    }
