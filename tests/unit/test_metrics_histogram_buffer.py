"""Latency values are buffered per call and handed to the histogram before every collection."""

from __future__ import annotations

from multiagent._metrics import OBSERVED_BUFFER, MetricsStore
from multiagent._metrics_data import MetricsSnapshot


def _count(snapshot: MetricsSnapshot, model: str) -> float:
    (value,) = [
        s.value
        for s in snapshot.counters + snapshot.gauges
        if s.name == "multiagent_model_latency_seconds_count" and s.labels.get("model") == model
    ]
    return value


def test_every_buffered_value_reaches_the_in_memory_reader_and_the_export() -> None:
    exported: list[MetricsSnapshot] = []
    store = MetricsStore(export_interval_s=3600)
    store.add_sink(lambda snapshot: exported.append(snapshot))
    observed = OBSERVED_BUFFER + 3  # past the buffer's bound: part is handed over at once
    for n in range(observed):
        store.observe("model_latency_seconds", value=0.01 * (n % 7), labels={"model": "m"})
    assert _count(store.snapshot(), "m") == observed
    store.observe("model_latency_seconds", value=0.5, labels={"model": "m"})
    store._provider.shutdown()  # the periodic reader's last export
    assert _count(exported[-1], "m") == observed + 1


def test_a_reset_drops_values_not_yet_collected() -> None:
    store = MetricsStore()
    store.observe("model_latency_seconds", value=0.1, labels={"model": "m"})
    store.reset()
    store.observe("model_latency_seconds", value=0.2, labels={"model": "n"})
    names = {s.labels.get("model") for s in store.snapshot().counters + store.snapshot().gauges}
    assert names == {"n"}
