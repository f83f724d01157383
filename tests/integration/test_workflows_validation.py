"""Cross-validation end to end: structured verdicts, consensus, failures, batches, fan-out bound."""

from __future__ import annotations

import threading
from typing import Any
from uuid import UUID

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import BaseMessage

from multiagent.errors import UsageError
from multiagent.graphs.batch import batch_cross_validate
from multiagent.graphs.inputs import validation_input
from multiagent.graphs.run_events import WorkflowEvent
from multiagent.graphs.runner import run_workflow
from multiagent.graphs.threads import list_threads
from multiagent.graphs.workflows import compile_workflow
from multiagent.models.pipeline import ModelPipeline
from multiagent.nodes.context import build_context
from multiagent.persistence.checkpointer import open_checkpointer
from multiagent.policies import Settings, load_settings
from multiagent.sim.model import SimulatedChatModel

#: 30 ms per call, and a provider rate limit far above what the test sends (pacing is not tested)
FAST_PROVIDER = {
    "sim.ttft_s": 0.03,
    "rate_limit.requests_per_minute": 600_000,
    "rate_limit.tokens_per_minute": 600_000_000,
}
TEXT = "The bakery opened in 1990. It sells bread and pastries, and employs three bakers."


class FailingAgentsPipeline(ModelPipeline):
    """The real pipeline, except that the named agents get a provider that always answers 500."""

    def __init__(self, settings: Settings, *, failing: set[str]) -> None:
        super().__init__(settings)
        self.failing = failing

    def model_for(self, tier: Any, *, agent: str, **kwargs: Any) -> Any:
        if agent in self.failing:
            return SimulatedChatModel(model="gpt-3.5-turbo", server_error_rate=1.0)
        return super().model_for(tier, agent=agent, **kwargs)


class InFlight(BaseCallbackHandler):
    """Counts model calls in flight at once (real calls, as the callbacks see them)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.now = 0
        self.peak = 0
        self.calls = 0
        self.runs: set[UUID] = set()

    def on_chat_model_start(
        self,
        serialized: dict[str, Any],
        messages: list[list[BaseMessage]],
        *,
        run_id: UUID,
        **kwargs: Any,
    ) -> None:
        with self.lock:
            self.runs.add(run_id)
            self.now += 1
            self.calls += 1
            self.peak = max(self.peak, self.now)

    def _done(self, run_id: UUID) -> None:
        with self.lock:
            if run_id in self.runs:
                self.runs.discard(run_id)
                self.now -= 1

    def on_llm_end(self, response: Any, *, run_id: UUID, **kwargs: Any) -> None:
        self._done(run_id)

    def on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self._done(run_id)


def test_single_text_gets_one_structured_verdict_per_validator() -> None:
    settings = load_settings()  # dev_balanced: 3 validators by default, threshold 0.6
    context = build_context(settings)
    inputs = validation_input([TEXT], settings=settings, agents=context.agents)
    values = compile_workflow("validation").invoke(inputs, context=context)
    verdicts = values["verdicts"]
    assert sorted(v["validator"] for v in verdicts) == sorted(
        ["factual_accuracy", "logical_consistency", "completeness"]
    )
    for verdict in verdicts:
        assert isinstance(verdict["passed"], bool)
        assert 0.0 <= verdict["confidence"] <= 1.0
        assert isinstance(verdict["issues"], list)
    [result] = values["results"]
    passes = sum(v["passed"] for v in verdicts)
    assert result["approval"] == pytest.approx(passes / 3, abs=1e-4)
    assert result["passed"] == (passes / 3 >= 0.6)
    assert values["failures"] == []


def test_a_failing_validator_is_recorded_and_the_others_decide() -> None:
    settings = load_settings()
    pipeline = FailingAgentsPipeline(settings, failing={"completeness"})
    context = build_context(settings, pipeline=pipeline)
    inputs = validation_input([TEXT], settings=settings, agents=context.agents, threshold=0.5)
    events: list[WorkflowEvent] = []
    with open_checkpointer(settings) as saver:
        outcome = run_workflow(
            "validation", inputs, context=context, checkpointer=saver, thread_id="v-fail",
            on_event=events.append,
        )  # fmt: skip
    assert outcome.status == "completed"
    # the live display marks the validator that did not answer (✗), the others ✓
    finished = {
        e.data["agent"]: e.data["error"]
        for e in events
        if e.kind == "custom" and e.data and e.data.get("type") == "agent_finished"
    }
    assert finished["completeness"] == "InternalServerError"
    assert [name for name, error in finished.items() if error] == ["completeness"]
    [failure] = outcome.values["failures"]
    assert failure["validator"] == "completeness"
    assert "InternalServerError" in failure["error"]
    [result] = outcome.values["results"]
    assert (result["validators"], result["responded"], result["failed"]) == (
        3,
        2,
        ["completeness"],
    )
    verdicts = outcome.values["verdicts"]
    assert result["approval"] == pytest.approx(sum(v["passed"] for v in verdicts) / 2, abs=1e-4)


def test_an_item_no_validator_answered_fails_and_resume_runs_its_validators_again() -> None:
    settings = load_settings()
    validators = {"factual_accuracy", "logical_consistency", "completeness"}
    context = build_context(settings, pipeline=FailingAgentsPipeline(settings, failing=validators))
    inputs = validation_input([TEXT], settings=settings, agents=context.agents)
    with open_checkpointer(settings) as saver:
        down = run_workflow(
            "validation", inputs, context=context, checkpointer=saver, thread_id="v-outage"
        )
        # an outage is not a verdict: the run failed, resumable, naming the item
        assert down.status == "failed"
        assert "no validator answered item 1" in down.message
        assert "InternalServerError" in (down.error or "")
        assert down.values["results"][0]["responded"] == 0
        [listed] = [t for t in list_threads(saver) if t["thread_id"] == "v-outage"]
        assert listed["status"] == "failed"  # as the run said, not completed

        back = run_workflow(
            "validation", None, context=build_context(settings), checkpointer=saver,
            thread_id="v-outage", resume=True,
        )  # fmt: skip
        [listed] = [t for t in list_threads(saver) if t["thread_id"] == "v-outage"]
        assert listed["status"] == "completed"
    assert back.status == "completed"
    assert back.ledger.totals()["calls"] == 3  # the three validators ran again
    [result] = back.values["results"]
    assert (result["responded"], result["failed"]) == (3, [])
    assert back.values["failures"] == []  # the failed answers are not part of the new verdict
    assert sorted(v["validator"] for v in back.values["verdicts"]) == sorted(validators)


def test_batch_keeps_input_order_validates_identical_items_once_and_reuses_the_cache() -> None:
    settings = load_settings()
    items = [
        {"id": "a", "text": "Rye bread keeps for a week."},
        {"id": "b", "text": TEXT},
        {"id": "c", "text": "Rye bread keeps for a week."},
        {"id": "d", "text": "Sourdough needs a starter."},
    ]
    first = batch_cross_validate(items, settings=settings, validators=2, max_concurrency=3)
    assert first.status == "completed"
    assert [r["id"] for r in first.results] == ["a", "b", "c", "d"]
    assert len(first.verdicts) == 3 * 2  # three distinct texts, two validators each
    assert first.usage["calls"] == 6
    same = {k: v for k, v in first.results[0].items() if k != "id"}
    assert same == {k: v for k, v in first.results[2].items() if k != "id"}
    assert not any(v["cached"] for v in first.verdicts)
    cache = build_context(settings).analysis_cache
    assert cache is not None
    hits_before = cache.stats()["total"]["hits"]
    again = batch_cross_validate(
        [*items, {"id": "e", "text": "Croissants need cold butter."}],
        settings=settings,
        validators=2,
    )
    assert [r["id"] for r in again.results] == ["a", "b", "c", "d", "e"]
    cached = [v for v in again.verdicts if v["cached"]]
    assert len(cached) == 6  # every verdict seen before came from the analysis cache
    assert again.usage["calls"] == 2  # only the new text reached the model
    assert cache.stats()["total"]["hits"] - hits_before == 6
    assert [r["status"] for r in again.results[:4]] == [r["status"] for r in first.results]


@pytest.mark.parametrize("bound", [1, 3])
def test_fan_out_respects_max_concurrency(bound: int) -> None:
    settings = load_settings(overrides={**FAST_PROVIDER, "cache.analysis_enabled": False})
    context = build_context(settings, analysis_cache=None)
    texts = [f"Claim number {i} about bread." for i in range(4)]
    inputs = validation_input(texts, settings=settings, agents=context.agents, validators=2)
    counter = InFlight()
    values = compile_workflow("validation").invoke(
        inputs, {"max_concurrency": bound, "callbacks": [counter]}, context=context
    )
    assert len(values["verdicts"]) == 8
    assert counter.calls == 8
    assert counter.peak == bound


def test_batch_cross_validate_bounds_in_flight_calls_through_the_config() -> None:
    settings = load_settings(overrides=FAST_PROVIDER)
    texts = [f"Oven number {i} runs at 220 C." for i in range(6)]
    counter = InFlight()
    result = batch_cross_validate(
        texts, settings=settings, validators=2, max_concurrency=4, callbacks=[counter]
    )
    assert counter.calls == 12
    assert counter.peak == 4
    assert [r["id"] for r in result.results] == [str(i) for i in range(1, 7)]


def test_threads_of_items_given_as_plain_texts_or_refused_are_listed() -> None:
    settings = load_settings()
    with open_checkpointer(settings) as saver:
        graph = compile_workflow("validation", checkpointer=saver)
        texts = {"items": ["Ovens are hot.", TEXT], "validators": ["safety"]}
        graph.invoke(texts, {"configurable": {"thread_id": "v-texts"}})
        refused = {"items": [{"id": "a"}]}  # no text: the first node refuses it, stored as given
        with pytest.raises(UsageError, match="items"):
            graph.invoke(refused, {"configurable": {"thread_id": "v-refused"}})
        listed = {t["thread_id"]: t for t in list_threads(saver)}
    assert listed["v-texts"]["status"] == "completed"
    assert listed["v-texts"]["subject"] == "2 items: Ovens are hot."
    assert listed["v-refused"]["subject"] == ""


def test_the_input_schema_studio_reads_takes_plain_texts_as_the_graph_does() -> None:
    import jsonschema

    schema = compile_workflow("validation").get_input_jsonschema()
    given = {"items": ["The sky is blue.", {"id": "b", "text": "Water is wet."}]}
    jsonschema.validate(given, schema)  # Studio's form and LangGraph Server's check
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"items": [3]}, schema)
    state = compile_workflow("validation").invoke(given, context=build_context(load_settings()))
    assert [r["id"] for r in state["results"]] == ["1", "b"]
