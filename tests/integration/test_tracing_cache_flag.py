"""A model call the completion cache answered is marked on its trace span, and costs nothing."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from langchain_core.caches import InMemoryCache
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from multiagent.observability.tracing import configure_tracing, run_config, shutdown_tracing
from multiagent.policies import Settings, load_settings
from multiagent.sim.model import SimulatedChatModel


@pytest.fixture
def settings() -> Settings:
    return load_settings()


@pytest.fixture
def spans(settings: Settings) -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    configure_tracing(settings, exporter=exporter)
    yield exporter
    shutdown_tracing()


def test_a_cache_hit_span_is_marked_cached_and_free(
    settings: Settings, spans: InMemorySpanExporter
) -> None:
    model = SimulatedChatModel(model="gpt-4o-mini", cache=InMemoryCache())
    config = run_config(workflow="demo", settings=settings, thread_id="t-cache")
    first = model.invoke("Compare two launch plans", config)
    again = model.invoke("Compare two launch plans", config)
    other = model.invoke("Another question", config)
    assert again.text == first.text
    calls = [s for s in spans.get_finished_spans() if s.name == "chat gpt-4o-mini"]
    flags = [(s.attributes or {})["multiagent.cached"] for s in calls]
    costs = [(s.attributes or {})["multiagent.cost_usd"] for s in calls]
    assert flags == [False, True, False]  # in call order: miss, hit, miss
    assert costs[1] == 0
    price = settings.profile.price_of("gpt-4o-mini")
    assert price is not None
    assert all(isinstance(c, float) and c > 0 for c in (costs[0], costs[2]))
    assert other.text != first.text
