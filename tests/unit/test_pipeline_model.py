"""The model pipeline with the in-process simulated provider: accounting, budget, cache, redaction,
tools, structured output, retries, and cache hits while LangGraph streams tokens."""

from __future__ import annotations

import operator
from collections.abc import Iterator
from typing import Annotated, Any

import openai
import pytest
from langchain_core.messages import AIMessage, AIMessageChunk
from langgraph.graph import END, START, StateGraph
from pydantic import BaseModel
from typing_extensions import TypedDict

from multiagent._metrics import get_metrics
from multiagent.errors import BudgetExceededError
from multiagent.models.adaptive import reset_shared_controllers
from multiagent.models.pipeline import ModelPipeline, PipelineChatModel, RunLedger
from multiagent.models.retry import RetryPolicy
from multiagent.policies import load_settings


@pytest.fixture(autouse=True)
def fresh_controllers() -> Iterator[None]:
    reset_shared_controllers()
    yield
    reset_shared_controllers()


def pipeline(**overrides: Any) -> ModelPipeline:
    settings = load_settings(overrides=overrides)
    return ModelPipeline(settings, retry=RetryPolicy(attempts=6, base_s=0.001, cap_s=0.01))


def test_calls_are_accounted_and_a_repeat_is_a_free_cache_hit() -> None:
    ledger = RunLedger()
    model = pipeline().model_for("standard", agent="alice", ledger=ledger)
    assert isinstance(model, PipelineChatModel)
    first = model.invoke("Draft the launch plan for the beta")
    second = model.invoke("Draft the launch plan for the beta")
    assert second.content == first.content
    assert [c.cached for c in ledger.calls] == [False, True]
    paid, hit = ledger.calls
    assert paid.input_tokens > 0
    assert paid.output_tokens > 0
    assert paid.cost_usd > 0
    assert paid.model == "gpt-4o-mini"
    assert paid.provider == "sim"
    assert (hit.cost_usd, hit.input_tokens, hit.output_tokens) == (0.0, 0, 0)
    assert ledger.totals()["cache_hits"] == 1
    assert ledger.spent_usd == pytest.approx(paid.cost_usd)
    assert "headers" not in first.response_metadata


def test_budget_is_enforced_before_the_provider_is_called() -> None:
    metrics = get_metrics()
    labels = {"provider": "sim", "model": "gpt-4o", "agent": "spender", "outcome": "ok"}
    before = metrics.counter("model_calls_total", labels=labels)
    ledger = RunLedger(budget_usd=1e-7)
    model = pipeline().model_for("premium", agent="spender", ledger=ledger)
    with pytest.raises(BudgetExceededError) as caught:
        model.invoke("An expensive question about the roadmap")
    assert caught.value.budget_usd == 1e-7
    (refused,) = ledger.calls  # sent nothing: a cancelled call of 0 tokens, cost 0
    assert (refused.outcome, refused.attempts, refused.input_tokens) == ("cancelled", 0, 0)
    assert ledger.spent_usd == 0
    assert metrics.counter("model_calls_total", labels=labels) == before
    assert ModelPipeline(load_settings()).controller_for("gpt-4o").state().samples == 0


def test_profile_can_switch_the_completion_cache_off() -> None:
    ledger = RunLedger()
    model = pipeline(**{"cache.completion_enabled": False}).model_for(
        "fast", agent="a", ledger=ledger
    )
    model.invoke("same words")
    model.invoke("same words")
    assert [c.cached for c in ledger.calls] == [False, False]


def test_pii_is_redacted_before_the_cache_key_and_the_provider() -> None:
    ledger = RunLedger()
    model = pipeline(**{"features.pii_redaction": True}).model_for(
        "standard", agent="a", ledger=ledger
    )
    reply = model.invoke("Contact jane@example.com about the invoice")
    assert "jane@example.com" not in reply.text  # the simulator echoes what it was sent
    assert "REDACTED_EMAIL" in reply.text
    again = model.invoke("Contact bob@example.org about the invoice")
    assert again.content == reply.content
    assert [c.cached for c in ledger.calls] == [False, True]


class Verdict(BaseModel):
    """A validator's verdict."""

    valid: bool
    reason: str


def test_structured_output_and_tools_work_through_the_wrapper() -> None:
    model = pipeline().model_for("standard", agent="validator")
    verdict = model.with_structured_output(Verdict).invoke("Is the plan sound?")
    assert isinstance(verdict, Verdict)

    def lookup(city: str) -> str:
        """Look a city up."""
        return city

    message = model.bind_tools([lookup], tool_choice="lookup").invoke("Where is Paris?")
    assert isinstance(message, AIMessage)
    assert message.tool_calls[0]["name"] == "lookup"
    assert isinstance(message.tool_calls[0]["args"]["city"], str)


def test_server_errors_are_retried_and_counted_as_attempts() -> None:
    ledger = RunLedger()
    model = pipeline(**{"sim.server_error_rate": 0.4, "sim.seed": 3}).model_for(
        "fast", agent="a", ledger=ledger
    )
    for i in range(6):
        model.invoke(f"question {i}")
    assert all(c.error is None for c in ledger.calls)
    assert ledger.totals()["retries"] > 0


def test_a_call_that_keeps_failing_is_recorded_as_failed() -> None:
    ledger = RunLedger()
    settings = load_settings(overrides={"sim.rate_limit_error_rate": 1.0, "sim.retry_after_s": 0})
    model = ModelPipeline(settings, retry=RetryPolicy(attempts=3, base_s=0.001)).model_for(
        "fast", agent="a", ledger=ledger
    )
    with pytest.raises(openai.RateLimitError):
        model.invoke("never answered")
    (call,) = ledger.calls
    assert (call.error, call.attempts, call.cost_usd) == ("rate_limit", 3, 0.0)
    assert ledger.totals()["errors"] == 1


async def test_async_calls_and_streams_are_accounted() -> None:
    ledger = RunLedger()
    model = pipeline().model_for("standard", agent="a", ledger=ledger)
    answer = await model.ainvoke("async question")
    chunks = [chunk async for chunk in model.astream("a streamed question")]
    assert isinstance(answer, AIMessage)
    assert len(chunks) > 2
    assert all(isinstance(c, AIMessageChunk) for c in chunks)
    assert [c.cached for c in ledger.calls] == [False, False]
    assert ledger.calls[1].output_tokens > 0


class State(TypedDict):
    question: str
    answers: Annotated[list[str], operator.add]


def test_cache_hits_while_langgraph_streams_messages() -> None:
    ledger = RunLedger()
    model = pipeline().model_for("standard", agent="writer", ledger=ledger)

    def answer(state: State) -> dict[str, list[str]]:
        return {"answers": [model.invoke(state["question"]).text]}

    builder = StateGraph(State)
    builder.add_node("answer", answer)
    builder.add_edge(START, "answer")
    builder.add_edge("answer", END)
    graph = builder.compile()
    question: State = {"question": "Summarise the quarterly risks", "answers": []}

    cold = list(graph.stream(question, stream_mode="messages"))
    warm = list(graph.stream(question, stream_mode="messages"))
    cold_text = "".join(str(message.content) for message, _ in cold)
    warm_text = "".join(str(message.content) for message, _ in warm)
    assert len(cold) > 3  # tokens streamed one by one from the provider
    assert all(isinstance(message, AIMessageChunk) for message, _ in cold)
    assert warm_text == cold_text  # the cached answer still reaches the stream
    assert [c.cached for c in ledger.calls] == [False, True]
    assert cold[0][1]["langgraph_node"] == "answer"


def test_a_finished_run_leaves_nothing_behind_in_the_pipeline() -> None:
    """A pipeline serves run after run in one process (a server, a notebook): a run's copies of
    its models, its ledger and its records must go when the run does."""
    import gc
    import weakref

    shared = pipeline()
    gone: list[weakref.ref[RunLedger]] = []
    for index in range(3):
        ledger = RunLedger()
        shared.model_for("standard", agent="alice", ledger=ledger).invoke(f"Run {index}")
        gone.append(weakref.ref(ledger))
        del ledger
    gc.collect()
    assert [ref() for ref in gone] == [None, None, None]
    # and a run still gets one copy per agent for its whole life
    ledger = RunLedger()
    first = shared.model_for("standard", agent="alice", ledger=ledger)
    assert shared.model_for("standard", agent="alice", ledger=ledger) is first


def test_invocation_parameters_are_langchain_s_own() -> None:
    from langchain_core.language_models import BaseChatModel

    model = pipeline().model_for("standard", agent="alice", ledger=RunLedger())
    calls: list[tuple[list[str] | None, dict[str, Any]]] = [
        (None, {}),
        (["\n"], {"max_tokens": 7}),
        (None, {"n": 2, "tool_choice": "auto"}),
    ]
    for stop, kwargs in calls:
        ours = model._get_invocation_params(stop=stop, **kwargs)
        theirs = BaseChatModel._get_invocation_params(model, stop=stop, **kwargs)
        assert list(ours.items()) == list(theirs.items())
    assert model._get_invocation_params() is not model._get_invocation_params()


def test_a_call_reads_its_derived_parameters_without_pydantic_s_getattr(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # a private attribute read by name costs a failed lookup and pydantic's __getattr__
    model = pipeline().model_for("standard", agent="alice", ledger=RunLedger())

    def refused(self: PipelineChatModel, item: str) -> Any:
        raise AssertionError(f"read {item!r} through __getattr__")

    monkeypatch.setattr(PipelineChatModel, "__getattr__", refused, raising=False)
    assert model.invoke("Draft the launch plan for the beta").content
