"""A collector added while a collection runs: neither waits for the other for good.

A worker's first call to a model registers that model's shared limiter as a collector while the
live writer collects. Creating the collector's gauge takes the SDK's collection lock; the
collection's callbacks take the store's lock. Holding the store's lock while creating the gauge
deadlocked both threads, and with them every agent of the run.
"""

from __future__ import annotations

import threading

from multiagent._metrics import MetricsStore
from multiagent._metrics_data import MetricsSnapshot

#: A bound on waiting for the other thread; the test never needs more than a blink of it.
PATIENCE_S = 30.0


def test_a_collector_added_mid_collection_deadlocks_neither_thread() -> None:
    store = MetricsStore()
    collecting, adding = threading.Event(), threading.Event()
    armed = False

    def first() -> list[tuple[str, dict[str, str], float]]:
        if armed:  # inside the collection, holding the SDK's lock: let the addition start
            collecting.set()
            adding.wait(PATIENCE_S)
        return [("first", {}, 1.0)]

    def second() -> list[tuple[str, dict[str, str], float]]:
        return [("second", {}, 2.0)]

    def added() -> list[tuple[str, dict[str, str], float]]:
        adding.set()  # first asked for its names as it is added
        return [("added", {}, 3.0)]

    store.add_collector(first)
    store.add_collector(second)  # its callback runs after first's, in the same collection
    armed = True
    snapshots: list[MetricsSnapshot] = []
    collector = threading.Thread(target=lambda: snapshots.append(store.snapshot()), daemon=True)
    collector.start()
    assert collecting.wait(PATIENCE_S)
    adder = threading.Thread(target=store.add_collector, args=(added,), daemon=True)
    adder.start()
    collector.join(PATIENCE_S)
    adder.join(PATIENCE_S)
    assert not collector.is_alive(), "the collection never finished"
    assert not adder.is_alive(), "the collector was never added"
    armed = False
    values = {s.name: s.value for s in store.snapshot().gauges}
    assert values == {
        "multiagent_first": 1.0,
        "multiagent_second": 2.0,
        "multiagent_added": 3.0,
    }
    assert {s.name for s in snapshots[0].gauges} >= {"multiagent_first", "multiagent_second"}


def test_a_collector_that_records_a_metric_of_its_own_is_added_and_reset() -> None:
    """Asked for its names as it is added (and again on reset), a collector may count something
    new; that takes the instrument lock, so it must not be asked while that lock is held."""
    store = MetricsStore()

    def counting() -> list[tuple[str, dict[str, str], float]]:
        store.inc("collector_reads_total")  # a counter this store has not seen yet
        return [("counting", {}, 1.0)]

    def add_then_reset() -> None:
        store.add_collector(counting)
        store.reset()

    worker = threading.Thread(target=add_then_reset, daemon=True)
    worker.start()
    worker.join(PATIENCE_S)
    assert not worker.is_alive(), "the collector's own metric waited for the lock its caller held"
    snapshot = store.snapshot()
    assert {s.name: s.value for s in snapshot.gauges} == {"multiagent_counting": 1.0}
    reads = store.counter("collector_reads_total")
    assert reads >= 2  # the reset's own ask and this snapshot's (after the reset forgot the rest)
