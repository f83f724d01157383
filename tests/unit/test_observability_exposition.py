"""Prometheus text rendering and the summary the counters add up to."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from multiagent._metrics import MetricsStore, Series
from multiagent.observability.exposition import render_prometheus
from multiagent.observability.summary import merge_series, point_of, summarize


def parse_exposition(text: str) -> tuple[dict[str, str], list[tuple[str, str, float]]]:
    """Parse ``text`` with prometheus_client's own parser; return family types and samples."""
    types: dict[str, str] = {}
    samples: list[tuple[str, str, float]] = []
    for family in text_string_to_metric_families(text):
        types[family.name] = family.type
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            samples.append((sample.name, labels, sample.value))
    return types, samples


def _store() -> MetricsStore:
    store = MetricsStore()
    for agent, outcome in (("analyst", "ok"), ("analyst", "ok"), ("critic", "error")):
        labels = {"provider": "sim", "model": "gpt-4o", "agent": agent, "outcome": outcome}
        store.inc("model_calls_total", labels=labels)
    store.inc("model_calls_total", labels={"model": "gpt-4o-mini", "outcome": "cached"})
    store.inc("model_tokens_total", value=120, labels={"model": "gpt-4o", "direction": "input"})
    store.inc("model_tokens_total", value=30, labels={"model": "gpt-4o", "direction": "output"})
    store.inc("model_cost_usd_total", value=0.0006, labels={"model": "gpt-4o"})
    store.observe("model_latency_seconds", value=0.1, labels={"model": "gpt-4o"})
    store.observe("model_latency_seconds", value=0.2, labels={"model": "gpt-4o"})
    store.inc("model_errors_total", labels={"model": "gpt-4o", "kind": "server"})
    store.inc("model_retries_total", value=2, labels={"model": "gpt-4o", "kind": "rate_limit"})
    store.inc("completion_cache_hits_total")
    store.inc("completion_cache_misses_total", value=3)
    store.inc("analysis_cache_hits_total", value=2, labels={"kind": "validator"})
    store.inc("analysis_cache_expired_total", labels={"kind": "validator"})
    store.inc("analysis_cache_misses_total", labels={"kind": "validator"})
    store.set_gauge("backpressure_limit", value=4, labels={"provider": "sim", "model": "gpt-4o"})
    return store


def test_the_exposition_parses_and_types_every_family() -> None:
    snapshot = _store().snapshot()
    text = render_prometheus(snapshot.counters, snapshot.gauges)
    types, samples = parse_exposition(text)
    assert types["multiagent_model_calls"] == "counter"
    assert types["multiagent_model_latency_seconds"] == "histogram"
    assert types["multiagent_backpressure_limit"] == "gauge"
    values = {(name, labels): value for name, labels, value in samples}
    assert values[("multiagent_model_latency_seconds_count", 'model="gpt-4o"')] == 2
    assert values[("multiagent_completion_cache_misses_total", "")] == 3
    assert values[("multiagent_model_latency_seconds_bucket", 'le="0.25",model="gpt-4o"')] == 2
    assert values[("multiagent_model_latency_seconds_bucket", 'le="0.1",model="gpt-4o"')] == 1
    calls = [v for (n, _), v in values.items() if n == "multiagent_model_calls_total"]
    assert sum(calls) == 4
    assert (
        'multiagent_model_calls_total{agent="analyst",model="gpt-4o",outcome="ok",'
        'provider="sim"} 2.0' in text.splitlines()
    )


def test_label_values_are_escaped_by_the_library() -> None:
    nasty = Series("multiagent_odd_total", {"path": 'C:\\dir "x"\nnext'}, 1.5)
    _, samples = parse_exposition(render_prometheus([nasty]))
    assert samples == [("multiagent_odd_total", 'path="C:\\dir "x"\nnext"', 1.5)]


def test_nothing_to_expose_is_an_empty_document() -> None:
    assert render_prometheus([], []) == ""


def test_the_summary_adds_up_calls_tokens_cost_errors_latency_and_caches() -> None:
    summary = summarize(_store().snapshot().counters)
    assert summary["calls"] == {"total": 4, "ok": 2, "error": 1, "cached": 1, "cancelled": 0}
    assert summary["tokens"] == {"input": 120, "output": 30, "total": 150}
    assert summary["cost_usd"] == pytest.approx(0.0006)
    assert summary["errors"] == {"total": 1, "by_kind": {"server": 1}}
    assert summary["retries"] == {"total": 2, "by_kind": {"rate_limit": 2}}
    assert summary["latency"]["avg_s"] == pytest.approx(0.15)
    # both calls in (0.1, 0.25] at most: the median interpolates inside the buckets
    assert 0.05 < summary["latency"]["p50_s"] <= 0.1
    assert 0.1 < summary["latency"]["p95_s"] <= 0.25
    assert summary["cache"]["completion"] == {"hits": 1, "misses": 3, "hit_rate": 0.25}
    assert summary["cache"]["analysis"]["hit_rate"] == pytest.approx(0.5)
    gpt4o = summary["models"]["gpt-4o"]
    assert gpt4o["calls"]["total"] == 3
    assert gpt4o["input_tokens"] == 120
    assert summary["models"]["gpt-4o-mini"]["calls"]["cached"] == 1
    assert summary["agents"]["critic"]["error"] == 1


def test_a_cancelled_call_is_in_the_calls_breakdown_as_the_run_reports_it() -> None:
    store = MetricsStore()
    for outcome in ("ok", "ok", "cancelled"):  # Ctrl-C stopped the third call mid-answer
        store.inc("model_calls_total", labels={"model": "m", "agent": "a", "outcome": outcome})
    summary = summarize(store.snapshot().counters)
    assert summary["calls"] == {"total": 3, "ok": 2, "error": 0, "cached": 0, "cancelled": 1}
    assert summary["models"]["m"]["calls"]["cancelled"] == 1
    assert summary["agents"]["a"]["cancelled"] == 1


def test_an_empty_summary_has_zero_rates_not_errors() -> None:
    summary = summarize([])
    assert summary["calls"]["total"] == 0
    assert summary["latency"]["avg_s"] == 0.0
    assert summary["cache"]["completion"]["hit_rate"] == 0.0
    assert summary["models"] == {}


def test_merge_adds_equal_series_and_a_point_sums_a_bucket() -> None:
    a = [Series("multiagent_model_calls_total", {"model": "m", "outcome": "ok"}, 2.0)]
    b = [Series("multiagent_model_calls_total", {"outcome": "ok", "model": "m"}, 3.0)]
    merged = merge_series(a, b)
    assert [(s.labels, s.value) for s in merged] == [({"model": "m", "outcome": "ok"}, 5.0)]
    assert point_of(merged)["calls"] == 5
