"""Render counters and gauges in the Prometheus text exposition format (version 0.0.4).

Every metric family gets ``# HELP`` and ``# TYPE`` lines, then one sample per line:
``name{label="value",...} value``. ``*_seconds_sum`` / ``*_seconds_count`` counter pairs are
rendered as one ``summary`` family, as Prometheus clients do.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from multiagent.observability.metrics import PREFIX, Series

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_HELP: dict[str, str] = {
    "model_calls_total": "Model calls by provider, model, agent and outcome (ok, error, cached).",
    "model_tokens_total": "Tokens sent to (input) and received from (output) the provider.",
    "model_cost_usd_total": "Cost of answered model calls, in USD.",
    "model_latency_seconds": "Latency of answered model calls.",
    "model_errors_total": "Model calls that failed after their last attempt, by error kind.",
    "model_retries_total": "Retried model call attempts, by error kind.",
    "completion_cache_hits_total": "Completion cache lookups that found an entry.",
    "completion_cache_misses_total": "Completion cache lookups that found nothing.",
    "analysis_cache_hits_total": "Analysis cache lookups that found a fresh result.",
    "analysis_cache_misses_total": "Analysis cache lookups that found nothing.",
    "analysis_cache_expired_total": "Analysis cache lookups that found a stale result.",
    "pii_redactions_total": "Personal data redacted from prompts, by kind.",
    "cache_entries": "Entries stored in a cache (all processes).",
    "cache_size_bytes": "Size on disk of a cache.",
    "backpressure_limit": "Requests the adaptive limiter lets in flight now.",
    "backpressure_in_flight": "Requests in flight through the adaptive limiter.",
    "backpressure_queued": "Requests waiting for the adaptive limiter.",
    "backpressure_rate_per_s": "Request rate the adaptive limiter allows, per second.",
    "backpressure_wait_multiplier": "Factor the limiter stretches waits by under stress.",
    "backpressure_error_rate": "Recent share of provider errors the limiter saw.",
    "backpressure_rtt_p50_s": "Median round-trip time the limiter saw, in seconds.",
    "backpressure_rtt_p95_s": "95th percentile round-trip time the limiter saw, in seconds.",
    "backpressure_paused_for_s": "Seconds left of a provider-ordered pause (Retry-After).",
    "backpressure_time_paused_s": "Seconds the limiter spent paused in total.",
}
_NAME_BAD = re.compile(r"[^a-zA-Z0-9_:]")
_LABEL_BAD = re.compile(r"[^a-zA-Z0-9_]")


def metric_name(name: str) -> str:
    """A valid Prometheus metric name (invalid characters become ``_``)."""
    cleaned = _NAME_BAD.sub("_", name)
    return f"_{cleaned}" if cleaned[:1].isdigit() else cleaned


def _label_name(name: str) -> str:
    cleaned = _LABEL_BAD.sub("_", name)
    return f"_{cleaned}" if cleaned[:1].isdigit() else cleaned


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def format_value(value: float) -> str:
    """A sample value as Prometheus reads it (``NaN``, ``+Inf``; integers without ``.0``)."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


def _sample(name: str, labels: dict[str, str], value: float) -> str:
    if not labels:
        return f"{name} {format_value(value)}"
    body = ",".join(
        f'{_label_name(k)}="{_escape_label(str(v))}"' for k, v in sorted(labels.items())
    )
    return f"{name}{{{body}}} {format_value(value)}"


@dataclass
class _Family:
    kind: str
    samples: list[tuple[str, dict[str, str], float]] = field(default_factory=list)


def _family_of(name: str, kind: str, names: set[str]) -> tuple[str, str]:
    """The family a series belongs to: a ``_sum``/``_count`` pair is one summary."""
    for suffix, other in (("_sum", "_count"), ("_count", "_sum")):
        base = name.removesuffix(suffix)
        if kind == "counter" and name.endswith(suffix) and base + other in names:
            return base, "summary"
    return name, kind


def render_prometheus(counters: Iterable[Series], gauges: Iterable[Series] = ()) -> str:
    """The exposition text of ``counters`` and ``gauges`` (families sorted by name).

    Args:
        counters: Counter series (cumulative).
        gauges: Gauge series (current values).

    Returns:
        The text, ending with a newline (empty when there is nothing to expose).
    """
    counter_list = [(metric_name(s.name), s.labels, s.value, "counter") for s in counters]
    gauge_list = [(metric_name(s.name), s.labels, s.value, "gauge") for s in gauges]
    counter_names = {name for name, *_ in counter_list}
    families: dict[str, _Family] = {}
    for name, labels, value, kind in [*counter_list, *gauge_list]:
        family, family_kind = _family_of(name, kind, counter_names)
        if family in families and families[family].kind != family_kind:
            family, family_kind = name, kind  # a clash between kinds: keep the series apart
        families.setdefault(family, _Family(family_kind)).samples.append((name, labels, value))
    lines: list[str] = []
    for family, data in sorted(families.items()):
        short = family.removeprefix(PREFIX)
        text = _HELP.get(short, f"multiagent metric {short}.")
        lines.append(f"# HELP {family} {_escape_help(text)}")
        lines.append(f"# TYPE {family} {data.kind}")
        lines.extend(_sample(n, lb, v) for n, lb, v in sorted(data.samples, key=_order))
    return "\n".join(lines) + "\n" if lines else ""


def _order(sample: tuple[str, dict[str, str], float]) -> tuple[str, list[tuple[str, str]]]:
    return sample[0], sorted(sample[1].items())
