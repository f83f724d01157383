"""Every figure of a run agrees: the ledger, the node usage in state, ``--json``, the metrics
store and the trace spans, for runs with cache hits, a structured-output failure, a budget
stop and a resume. And the project budget holds across processes."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from langchain_core.runnables.config import merge_configs
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from typing_extensions import TypedDict

from multiagent import _interrupt
from multiagent._metrics import get_metrics
from multiagent.distributed.entry_guard import EntryGuard, TakenOver
from multiagent.errors import BudgetExceededError
from multiagent.graphs.inputs import orchestration_input
from multiagent.graphs.report import outcome_report
from multiagent.graphs.run_outcome import WorkflowOutcome
from multiagent.graphs.runner import run_workflow
from multiagent.models.adaptive import reset_shared_controllers
from multiagent.models.budget import BUDGET_FILE, SQLiteProjectBudget
from multiagent.models.ledger import RunLedger
from multiagent.models.pipeline import ModelPipeline
from multiagent.nodes.agents_file import load_agents
from multiagent.nodes.context import build_context
from multiagent.observability.summary import summarize
from multiagent.observability.tracing import configure_tracing, run_config, shutdown_tracing
from multiagent.policies import Settings, load_settings

TASK = "Plan a product launch for the new analytics dashboard"


@pytest.fixture(autouse=True)
def fresh() -> Iterator[None]:
    reset_shared_controllers()
    yield
    reset_shared_controllers()


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    configure_tracing(load_settings(), exporter=exporter)
    yield exporter
    shutdown_tracing()


def run(
    settings: Settings,
    saver: InMemorySaver,
    *,
    thread: str,
    resume: bool = False,
    budget: float | None = None,
    task: str = TASK,
) -> WorkflowOutcome:
    agents = load_agents(settings)
    traced = run_config(workflow="orchestration", settings=settings, thread_id=thread)
    return run_workflow(
        "orchestration",
        None if resume else orchestration_input(task, agents=agents, team=["analyst", "critic"]),
        context=build_context(
            settings, agents=agents, budget_usd=budget, pipeline=ModelPipeline(settings)
        ),
        checkpointer=saver,
        thread_id=thread,
        resume=resume,
        metadata=traced["metadata"],
        callbacks=traced["callbacks"],
    )


def test_json_metrics_ledger_and_traces_agree(spans: InMemorySpanExporter) -> None:
    settings = load_settings(env="dev_cost")
    saver = InMemorySaver()
    first = run(settings, saver, thread="t-1")
    again = run(settings, saver, thread="t-2")  # the same task: answered from the cache
    other = "Review the pricing page of the analytics dashboard"
    stopped = run(settings, saver, thread="t-3", budget=0.0017, task=other)  # one call's worth
    resumed = run(settings, saver, thread="t-3", resume=True, budget=1.0)
    outcomes = [first, again, stopped, resumed]
    assert [o.status for o in outcomes] == [
        "completed",
        "completed",
        "budget_exceeded",
        "completed",
    ]
    records = [c for o in outcomes for c in o.ledger.calls]
    assert again.ledger.totals()["cache_hits"] == len(again.ledger.calls) > 0

    # --json: this_run is the ledger; the thread's usage adds the earlier runs' entries
    for outcome in outcomes:
        report = outcome_report(outcome)
        totals = outcome.ledger.totals()
        assert {k: report["this_run"][k] for k in totals} == totals
    resumed_usage = outcome_report(resumed)["usage"]
    both = RunLedger(calls=[*stopped.ledger.calls, *resumed.ledger.calls]).totals()
    assert resumed_usage == {k: both[k] for k in resumed_usage}
    # the state's node usage, summed, is the thread's usage too (every node completed), but
    # for the calls the budget refused: their nodes stopped, and they were sent nothing
    state_entries = resumed.values["usage"]
    assert both["cancelled"] > 0
    assert sum(e["calls"] for e in state_entries) == both["calls"] - both["cancelled"]
    assert round(sum(e["cost_usd"] for e in state_entries), 8) == both["cost_usd"]

    # metrics: the same calls, tokens, cost and cache hits
    summary = summarize(get_metrics().snapshot().counters)
    assert summary["calls"]["total"] == len(records)
    assert summary["calls"]["cached"] == sum(c.cached for c in records)
    assert summary["tokens"]["input"] == sum(c.input_tokens for c in records)
    assert summary["tokens"]["output"] == sum(c.output_tokens for c in records)
    assert summary["cost_usd"] == pytest.approx(sum(c.cost_usd for c in records), abs=1e-9)
    saved = sum(c.saved_usd for c in records)
    assert saved > 0  # the cache hits' first cost
    assert summary["saved_usd"] == pytest.approx(saved, abs=1e-9)

    # traces: one client span per record, with the record's figures
    calls = [s for s in spans.get_finished_spans() if s.kind is SpanKind.CLIENT]
    attrs = [dict(s.attributes or {}) for s in calls]
    assert len(attrs) == len(records)
    # the calls the budget refused were sent nothing: cancelled records, their spans say why
    refused = [a for a in attrs if "error.type" in a]
    assert len(refused) == both["cancelled"]
    assert {(a["error.type"], a["multiagent.outcome"]) for a in refused} == {
        ("BudgetExceededError", "cancelled")
    }
    unsent = [c for c in stopped.ledger.calls if c.outcome == "cancelled"]
    assert {(c.input_tokens, c.output_tokens, c.attempts) for c in unsent} == {(0, 0, 0)}
    assert sum(a["gen_ai.usage.input_tokens"] for a in attrs) == sum(
        c.input_tokens for c in records
    )
    assert sum(a["gen_ai.usage.output_tokens"] for a in attrs) == sum(
        c.output_tokens for c in records
    )
    assert sum(bool(a["multiagent.cached"]) for a in attrs) == sum(c.cached for c in records)
    assert sum(a["multiagent.cost_usd"] for a in attrs) == pytest.approx(
        sum(c.cost_usd for c in records), abs=1e-9
    )
    assert sum(a["multiagent.saved_usd"] for a in attrs) == pytest.approx(saved, abs=1e-9)


@pytest.mark.parametrize("stop", ["ctrl_c", "budget", "taken_over"])
def test_a_call_stopped_before_it_is_sent_is_one_span_and_one_record(
    stop: str, spans: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """LangChain opens the call's span (and LangSmith run) before the pipeline stops it: the
    stopped call is a cancelled record of 0 tokens, so a trace counts the ledger's calls."""
    settings = load_settings(env="dev_cost")
    ours = [True]
    ledger = RunLedger(shared=EntryGuard(lambda: ours[0]) if stop == "taken_over" else None)
    llm = ModelPipeline(settings).model_for("standard", agent="a", ledger=ledger)
    config = run_config(workflow="demo", settings=settings, thread_id=f"t-unsent-{stop}")
    llm.invoke("Say hello", config)  # answered: one call, one span
    if stop == "ctrl_c":
        monkeypatch.setattr(_interrupt, "_requested", True)
    elif stop == "budget":  # spent: no room is left for another call
        ledger.budget_usd = ledger.spent_usd
    else:  # another worker took the entry over
        ours[0] = False
    expected = {
        "ctrl_c": _interrupt.StopRequested,
        "budget": BudgetExceededError,
        "taken_over": TakenOver,
    }[stop]
    with pytest.raises(expected):
        llm.invoke("Say goodbye", config)
    with pytest.raises(expected):
        for _ in llm.stream("Tell a story", config):
            pass
    calls = [s for s in spans.get_finished_spans() if s.kind is SpanKind.CLIENT]
    assert len(calls) == len(ledger.calls) == 3
    assert [c.outcome for c in ledger.calls] == ["ok", "cancelled", "cancelled"]
    assert all((c.input_tokens, c.output_tokens, c.attempts) == (0, 0, 0) for c in ledger.calls[1:])
    outcomes = [(s.attributes or {}).get("multiagent.outcome") for s in calls]
    assert outcomes == ["ok", "cancelled", "cancelled"]
    summary = summarize(get_metrics().snapshot().counters)
    assert summary["calls"]["total"] == len(ledger.calls)


def test_node_usage_counts_cache_hits_from_the_ledger() -> None:
    settings = load_settings(env="dev_cost")
    saver = InMemorySaver()
    run(settings, saver, thread="c-1")
    again = run(settings, saver, thread="c-2")
    hits = [c for c in again.ledger.calls if c.cached]
    assert hits
    assert len(hits) == len(again.ledger.calls)
    entries = again.values["usage"]
    assert sum(e["cache_hits"] for e in entries) == len(hits)
    by_node: dict[str, int] = {}
    for call in hits:
        by_node[call.node] = by_node.get(call.node, 0) + 1
    per_node: dict[str, int] = {}
    for entry in entries:
        per_node[entry["node"]] = per_node.get(entry["node"], 0) + entry["cache_hits"]
    assert per_node == by_node
    assert all(e["cost_usd"] == 0 for e in entries)
    assert sum(c.saved_usd for c in hits) > 0


def _cut_off_async(llm: Any, config: Any) -> None:
    """Cancel an ``astream`` task once three chunks have arrived."""

    async def main() -> None:
        three = asyncio.Event()

        async def consume() -> None:
            seen = 0
            async for _ in llm.astream("Tell a long story about bread", config):
                seen += 1
                if seen == 3:
                    three.set()

        task = asyncio.create_task(consume())
        await three.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())


def _cut_off_by_ctrl_c(llm: Any, config: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C (the stop flag) after three chunks: the provider's next wait raises."""

    def consume() -> None:
        for seen, _ in enumerate(llm.stream("Tell a long story about bread", config), 1):
            if seen == 3:
                monkeypatch.setattr(_interrupt, "_requested", True)

    with pytest.raises(_interrupt.StopRequested):
        consume()


@pytest.mark.parametrize("how", ["asyncio", "ctrl_c"])
def test_a_call_cancelled_mid_stream_has_its_record_on_its_span(
    how: str, spans: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    # an answer streamed slowly enough to be cut off after a few chunks
    overrides = {"cache.completion_enabled": False, "sim.token_latency_s": 0.02}
    settings = load_settings(overrides=overrides)
    ledger = RunLedger()
    llm = ModelPipeline(settings).model_for("standard", agent="a", ledger=ledger)
    config = run_config(workflow="demo", settings=settings, thread_id=f"t-cut-{how}")
    if how == "asyncio":
        _cut_off_async(llm, config)
    else:
        _cut_off_by_ctrl_c(llm, config, monkeypatch)
    (record,) = ledger.calls
    assert record.outcome == "cancelled"
    assert record.output_tokens > 0  # what streamed was paid for
    assert record.cost_usd > 0
    (span,) = [s for s in spans.get_finished_spans() if s.kind is SpanKind.CLIENT]
    attrs = dict(span.attributes or {})
    assert attrs["multiagent.outcome"] == "cancelled"
    assert attrs["gen_ai.usage.input_tokens"] == record.input_tokens
    assert attrs["gen_ai.usage.output_tokens"] == record.output_tokens
    assert attrs["multiagent.cost_usd"] == round(record.cost_usd, 10)
    summary = summarize(get_metrics().snapshot().counters)
    assert summary["cost_usd"] == pytest.approx(attrs["multiagent.cost_usd"], abs=1e-9)


def test_an_ainvoke_cancelled_while_the_model_answers_closes_its_span(
    spans: InMemorySpanExporter,
) -> None:
    """LangChain's ``agenerate`` reports no end for a call its caller cancelled; the call
    reports it itself, so its span ends (with its record) instead of staying open."""
    settings = load_settings(overrides={"cache.completion_enabled": False, "sim.ttft_s": 60.0})
    ledger = RunLedger()
    llm = ModelPipeline(settings).model_for("standard", agent="a", ledger=ledger)
    config = run_config(workflow="demo", settings=settings, thread_id="t-ainvoke-cancelled")

    async def main() -> None:
        task = asyncio.create_task(llm.ainvoke("Tell a long story about bread", config))
        while llm.controller.state().in_flight == 0:  # the request is out, its answer due later
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    (record,) = ledger.calls
    assert record.outcome == "cancelled"
    assert llm.controller.state().in_flight == 0
    (span,) = [s for s in spans.get_finished_spans() if s.kind is SpanKind.CLIENT]
    attrs = dict(span.attributes or {})
    assert attrs["multiagent.outcome"] == "cancelled"
    assert attrs["gen_ai.usage.input_tokens"] == record.input_tokens


class _Story(TypedDict):
    text: str


def test_a_failed_calls_figures_are_counted_once_in_its_trace(
    spans: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The error of a call cut off mid-stream rises through its node and the graph: only the
    call's span carries the call's tokens and cost, so a sum over the trace is the ledger's."""
    overrides = {"cache.completion_enabled": False, "sim.token_latency_s": 0.02}
    settings = load_settings(overrides=overrides)
    ledger = RunLedger()
    llm = ModelPipeline(settings).model_for("standard", agent="a", ledger=ledger)

    def tell(state: _Story) -> dict[str, Any]:
        for seen, _ in enumerate(llm.stream(state["text"]), 1):
            if seen == 3:  # Ctrl-C: the provider's next wait raises
                monkeypatch.setattr(_interrupt, "_requested", True)
        return {}

    builder = StateGraph(_Story)
    builder.add_node("tell", tell)
    builder.add_edge(START, "tell")
    builder.add_edge("tell", END)
    thread = "t-failed-once"
    config = merge_configs(
        {"configurable": {"thread_id": thread}},
        run_config(workflow="demo", settings=settings, thread_id=thread, live=False),  # type: ignore[arg-type]
    )
    with pytest.raises(_interrupt.StopRequested):
        builder.compile().invoke({"text": "Tell a long story about bread"}, config)
    (record,) = ledger.calls
    assert record.cost_usd > 0
    finished = spans.get_finished_spans()
    assert sorted(s.name for s in finished) == ["chat gpt-4o-mini", "multiagent.demo", "tell"]
    figured = [s for s in finished if "multiagent.cost_usd" in (s.attributes or {})]
    assert [s.kind for s in figured] == [SpanKind.CLIENT]
    for name in ("gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens", "multiagent.cached"):
        assert [s.kind for s in finished if name in (s.attributes or {})] == [SpanKind.CLIENT]
    assert sum(s.attributes["multiagent.cost_usd"] for s in figured) == round(record.cost_usd, 10)  # type: ignore[index]
    # every span of the stopped run ended as an error, said to be a cancellation
    for span in finished:
        assert span.status.status_code is StatusCode.ERROR
        assert span.status.description == "StopRequested"
        assert (span.attributes or {})["multiagent.error_kind"] == "cancelled"


_SPENDER = """
import sys
from pathlib import Path
from multiagent.distributed.entry_guard import EntryGuard, TakenOver
from multiagent.errors import BudgetExceededError
from multiagent.models.budget import SQLiteProjectBudget

store = SQLiteProjectBudget(Path(sys.argv[1]), daily_usd=1.0, lease_s=60.0)
admitted = 0
for _ in range(40):
    try:
        held = store.reserve(0.1)
    except BudgetExceededError:
        continue
    admitted += 1
    store.settle(held, 0.1)
print(admitted)
"""


@pytest.mark.slow
def test_project_budget_across_two_processes_is_never_overspent(tmp_path: Path) -> None:
    path = tmp_path / BUDGET_FILE
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _SPENDER, str(path)], stdout=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    admitted = [int(p.communicate(timeout=120)[0]) for p in procs]
    assert sum(admitted) == 10  # $1 at $0.10 a call, whichever process asked
    report = SQLiteProjectBudget(path, daily_usd=1.0).report()
    assert report["spent_usd"] == pytest.approx(1.0)
    assert report["held_usd"] == 0


def test_a_killed_process_reservation_expires() -> None:
    now = [1000.0]
    store = SQLiteProjectBudget(
        Path(load_settings().home) / BUDGET_FILE, daily_usd=1.0, lease_s=30.0, clock=lambda: now[0]
    )
    store.reserve(0.9)  # never settled: its process died
    assert store.try_reserve(0.5) is None  # held back by the hold, not refused
    now[0] += 31
    store.settle(store.reserve(0.5), 0.5)
    assert store.report()["spent_usd"] == pytest.approx(0.5)


def test_the_project_cap_waits_for_holds_and_refuses_only_on_spend(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Calls started together: one holds most of the cap; another that fits beside what is
    spent waits for that hold to settle instead of being refused (four runs at once on a small
    cap ended budget_exceeded with most of it unspent); once spend leaves no room, refused."""
    from multiagent.models import budget

    waiting = threading.Event()

    def wait_or_stop(seconds: float) -> None:
        waiting.set()
        _interrupt.wait_or_stop(seconds)

    monkeypatch.setattr(budget, "wait_or_stop", wait_or_stop, raising=False)
    store = SQLiteProjectBudget(Path(load_settings().home) / BUDGET_FILE, daily_usd=1.0)
    first = store.reserve(0.9)
    waited: list[str] = []
    second = threading.Thread(target=lambda: waited.append(store.reserve(0.5)))
    second.start()
    assert waiting.wait(timeout=60)  # held back by the first call's hold, not refused
    store.settle(first, 0.4)  # the first call cost less than its worst case
    second.join(timeout=60)
    assert not second.is_alive()
    assert len(waited) == 1
    store.settle(waited[0], 0.5)
    assert store.report()["spent_usd"] == pytest.approx(0.9)
    with pytest.raises(BudgetExceededError, match=r"spent \$0\.900000, \$0\.000000 held"):
        store.reserve(0.2)  # spend alone leaves no room: refused at once, no wait


def test_pipeline_calls_reserve_in_the_project_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MULTIAGENT_BUDGET__DAILY_USD", "0.01")
    settings = load_settings(env="dev_cost", overrides={"cache.completion_enabled": False})
    pipeline = ModelPipeline(settings)
    assert pipeline.project is not None
    model = pipeline.model_for("fast", agent="a", ledger=RunLedger())
    model.invoke("Spend a little of the project's money")
    report: dict[str, Any] = pipeline.project.report()
    assert report["spent_usd"] > 0
    assert report["held_usd"] == 0
