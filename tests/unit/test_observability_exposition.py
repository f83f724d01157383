"""Prometheus text rendering and the summary the counters add up to."""

from __future__ import annotations

import math
import re

import pytest

from multiagent.observability.metrics import MetricsStore, Series
from multiagent.observability.prometheus import format_value, render_prometheus
from multiagent.observability.summary import merge_series, point_of, summarize

_LABEL = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\["\\n])*"'
SAMPLE = re.compile(
    rf"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{{(?P<labels>{_LABEL}(?:,{_LABEL})*)\}})? "
    r"(?P<value>NaN|[+-]Inf|-?[0-9.]+(?:e[+-]?[0-9]+)?)$"
)
META = re.compile(r"^# (HELP|TYPE) ([a-zA-Z_:][a-zA-Z0-9_:]*) (.+)$")


def parse_exposition(text: str) -> tuple[dict[str, str], list[tuple[str, str, float]]]:
    """Check every line of ``text``; return the family types and the samples."""
    types: dict[str, str] = {}
    helped: set[str] = set()
    samples: list[tuple[str, str, float]] = []
    assert text.endswith("\n")
    for line in text.splitlines():
        meta = META.match(line)
        if meta:
            kind, name, rest = meta.groups()
            if kind == "HELP":
                helped.add(name)
            else:
                assert rest in ("counter", "gauge", "summary", "histogram", "untyped"), line
                assert name in helped, f"TYPE before HELP: {line}"
                types[name] = rest
            continue
        match = SAMPLE.match(line)
        assert match, f"not a sample line: {line!r}"
        name = match["name"]
        family = next((f for f in types if name == f or name in (f + "_sum", f + "_count")), None)
        assert family is not None, f"sample without TYPE: {line}"
        samples.append((name, match["labels"] or "", float(match["value"])))
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
    store.inc("model_latency_seconds_sum", value=0.3, labels={"model": "gpt-4o"})
    store.inc("model_latency_seconds_count", value=2, labels={"model": "gpt-4o"})
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
    assert types["multiagent_model_calls_total"] == "counter"
    assert types["multiagent_model_latency_seconds"] == "summary"
    assert types["multiagent_backpressure_limit"] == "gauge"
    values = {(name, labels): value for name, labels, value in samples}
    assert values[("multiagent_model_latency_seconds_count", 'model="gpt-4o"')] == 2
    assert values[("multiagent_completion_cache_misses_total", "")] == 3
    calls = [v for (n, _), v in values.items() if n == "multiagent_model_calls_total"]
    assert sum(calls) == 4
    assert (
        'multiagent_model_calls_total{agent="analyst",model="gpt-4o",outcome="ok",provider="sim"} 2'
        in text.splitlines()
    )


def test_label_values_and_odd_names_are_escaped() -> None:
    nasty = Series("multiagent_odd-name.total", {"path": 'C:\\dir "x"\nnext', "1bad": "v"}, 1.5)
    text = render_prometheus([nasty])
    _, samples = parse_exposition(text)
    assert samples == [
        ("multiagent_odd_name_total", '_1bad="v",path="C:\\\\dir \\"x\\"\\nnext"', 1.5)
    ]


@pytest.mark.parametrize(
    ("value", "text"),
    [(3.0, "3"), (0.25, "0.25"), (math.inf, "+Inf"), (-math.inf, "-Inf"), (math.nan, "NaN")],
)
def test_values_are_written_as_prometheus_reads_them(value: float, text: str) -> None:
    assert format_value(value) == text


def test_nothing_to_expose_is_an_empty_document() -> None:
    assert render_prometheus([], []) == ""


def test_the_summary_adds_up_calls_tokens_cost_errors_latency_and_caches() -> None:
    summary = summarize(_store().snapshot().counters)
    assert summary["calls"] == {"total": 4, "ok": 2, "error": 1, "cached": 1}
    assert summary["tokens"] == {"input": 120, "output": 30, "total": 150}
    assert summary["cost_usd"] == pytest.approx(0.0006)
    assert summary["errors"] == {"total": 1, "by_kind": {"server": 1}}
    assert summary["retries"] == {"total": 2, "by_kind": {"rate_limit": 2}}
    assert summary["latency"]["avg_s"] == pytest.approx(0.15)
    assert summary["cache"]["completion"] == {"hits": 1, "misses": 3, "hit_rate": 0.25}
    assert summary["cache"]["analysis"]["hit_rate"] == pytest.approx(0.5)
    gpt4o = summary["models"]["gpt-4o"]
    assert gpt4o["calls"]["total"] == 3
    assert gpt4o["input_tokens"] == 120
    assert summary["models"]["gpt-4o-mini"]["calls"]["cached"] == 1
    assert summary["agents"]["critic"]["error"] == 1


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
