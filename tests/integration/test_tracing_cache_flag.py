"""A model call the completion cache answered is marked on its trace span, and costs nothing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from langchain_core.caches import InMemoryCache
from langchain_core.tracers.base import BaseTracer
from langchain_core.tracers.schemas import Run
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from multiagent.models.accounting import STAMP_KEY
from multiagent.models.ledger import RunLedger
from multiagent.models.pipeline import ModelPipeline
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


class _Runs(BaseTracer):
    """A LangChain tracer keeping finished runs, as LangSmith's tracer receives them."""

    def __init__(self) -> None:
        super().__init__()
        self.llm: list[Run] = []

    def _persist_run(self, run: Run) -> None:
        return

    def _on_llm_end(self, run: Run) -> None:
        self.llm.append(run)


def test_langsmith_reads_a_cache_hit_as_the_ledger_counts_it(isolated_env: Path) -> None:
    """The LLM run of a completion-cache hit carries the hit's figures (no tokens, no cost,
    cached), not those of the call that filled the cache, in every place LangSmith shows."""
    settings = load_settings()
    ledger = RunLedger()
    llm = ModelPipeline(settings).model_for("standard", agent="a", ledger=ledger)
    runs = _Runs()
    answers = [llm.invoke("Compare two launch plans", {"callbacks": [runs]}) for _ in range(2)]
    paid, hit = ledger.calls
    assert (paid.cached, hit.cached) == (False, True)
    assert (hit.input_tokens, hit.output_tokens, hit.cost_usd) == (0, 0, 0)
    for run, record, answer in zip(runs.llm, (paid, hit), answers, strict=True):
        (generation,) = run.outputs["generations"][0]  # type: ignore[index]
        message = generation["message"]["kwargs"]  # as LangSmith is sent it: serialized
        usage = message["usage_metadata"]
        # LangSmith's token and cost columns read the message's usage
        assert (usage["input_tokens"], usage["output_tokens"]) == (
            record.input_tokens,
            record.output_tokens,
        )
        assert usage["total_cost"] == pytest.approx(record.cost_usd)
        # the figures shown beside the answer are this call's, or none (the cached answer
        # carried those of the call that filled the cache: cached false, its cost)
        for shown in (message["response_metadata"], answer.response_metadata):
            stamp = shown.get(STAMP_KEY)
            assert stamp is None or stamp["multiagent.cached"] is record.cached
