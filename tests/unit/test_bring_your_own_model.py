"""Any LangChain chat model behind the pipeline runs all three workflows; the ladder's failures
are handled by the workflow (default plan split, validator not answering)."""

from __future__ import annotations

import functools
import itertools
import json
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest
from langchain_core.language_models import (
    BaseChatModel,
    FakeListChatModel,
    GenericFakeChatModel,
    LanguageModelInput,
)
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.runnables import Runnable, RunnableBinding, RunnableLambda
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from pydantic import SecretStr

from multiagent.errors import BudgetExceededError, ConfigError
from multiagent.graphs.meeting import build_meeting_graph
from multiagent.graphs.orchestration import build_orchestration_graph
from multiagent.graphs.run_events import WorkflowEvent
from multiagent.graphs.runner import run_workflow
from multiagent.graphs.validation import build_validation_graph
from multiagent.models._structured_bind import bind_step
from multiagent.models.adaptive import AdaptiveBackpressure
from multiagent.models.pipeline import ModelPipeline, RunLedger
from multiagent.models.structured import STRUCTURED_COUNTS, reset_structured_state
from multiagent.nodes.agents import BUILTIN_AGENTS, AgentSpec
from multiagent.nodes.agents_file import AgentCatalog
from multiagent.nodes.context import WorkflowContext, build_context
from multiagent.policies import ModelPrice, Settings, load_settings

FREE = ModelPrice(input_per_mtok=0.0, output_per_mtok=0.0)
#: One JSON object that validates as a plan, a verdict and a moderator's assessment.
EVERY_ANSWER = json.dumps(
    {
        "steps": [{"agent": "researcher", "subtask": "find the facts"}],
        "rationale": "the facts come first",
        "passed": True,
        "confidence": 0.9,
        "consensus": True,
        "agreement": 0.95,
    }
)


@pytest.fixture(autouse=True)
def fresh_ladder() -> Iterator[None]:
    reset_structured_state()
    yield
    reset_structured_state()


@pytest.fixture
def settings() -> Settings:
    return load_settings(overrides={"cache.completion_enabled": False})


def fake(*replies: str) -> GenericFakeChatModel:
    return GenericFakeChatModel(messages=itertools.cycle([AIMessage(r) for r in replies]))


def context_with(
    settings: Settings, model: BaseChatModel, agents: AgentCatalog | None = None
) -> WorkflowContext:
    pipeline = ModelPipeline(settings, model=model, price=FREE)
    return build_context(settings, pipeline=pipeline, agents=agents, analysis_cache=None)


def meet_twice(context: WorkflowContext) -> dict[str, Any]:
    """A meeting of two participants, two rounds at most."""
    met: dict[str, Any] = (
        build_meeting_graph()
        .compile()
        .invoke(
            {"topic": "Pricing", "participants": ["researcher", "critic"], "rounds": 2},
            context=context,
        )
    )
    return met


def validate_one(context: WorkflowContext) -> dict[str, Any]:
    """One text, two validators."""
    result: dict[str, Any] = (
        build_validation_graph()
        .compile()
        .invoke(
            {
                "items": [{"id": "a", "text": "Water boils at 100 C."}],
                "validators": ["clarity", "safety"],
                "threshold": 0.5,
            },
            context=context,
        )
    )
    return result


def test_a_generic_fake_model_runs_all_three_workflows(settings: Settings) -> None:
    context = context_with(settings, fake(EVERY_ANSWER))

    done = build_orchestration_graph().compile().invoke(
        {"task": "Plan a launch", "team": ["researcher", "analyst"], "planner_picks": True,
         "require_approval": False},
        context=context,
    )  # fmt: skip
    assert [step["agent"] for step in done["plan"]] == ["researcher"]
    assert done["rationale"] == "the facts come first"
    assert done["output"] == EVERY_ANSWER

    met = meet_twice(context)
    assert met["consensus"] is True
    assert len(met["transcript"]) == 2  # consensus after the first round

    checked = validate_one(context)
    (result,) = checked["results"]
    assert (result["status"], result["responded"]) == ("passed", 2)

    # every call went through the pipeline into the run's ledger, under the model's own name
    calls = context.ledger.calls
    assert {c.model for c in calls} == {"GenericFakeChatModel"}
    assert len(calls) == 1 + 1 + 1 + 2 + 1 + 1 + 2  # plan, work, synth; 2 speak, mod, sum; 2 val
    counts = STRUCTURED_COUNTS.snapshot()
    assert counts["plan"]["steps"] == {"text": 1}
    assert counts["validate"]["first_try"] == 2
    assert counts["moderate"]["first_try"] == 1


def test_a_planner_that_never_complies_gets_the_default_split(settings: Settings) -> None:
    context = context_with(settings, fake("I would rather not say."))
    done = build_orchestration_graph().compile().invoke(
        {"task": "Plan a launch", "team": ["researcher", "critic"], "planner_picks": True,
         "require_approval": False},
        context=context,
    )  # fmt: skip
    assert [step["agent"] for step in done["plan"]] == ["researcher", "critic"]
    assert all(step["subtask"].startswith("Plan a launch") for step in done["plan"])
    assert done["rationale"].startswith("default split")
    assert done["output"] == "I would rather not say."
    plan_calls = [c for c in context.ledger.calls if c.node == "plan"]
    assert len(plan_calls) == 2  # the text step and one repair: bounded
    assert STRUCTURED_COUNTS.snapshot()["plan"]["failed"] == 1


def test_a_validator_that_never_complies_counts_as_not_answering(settings: Settings) -> None:
    context = context_with(settings, fake("Looks fine to me."))
    checked = validate_one(context)
    (result,) = checked["results"]
    assert (result["status"], result["responded"]) == ("inconclusive", 0)
    assert result["failed"] == ["clarity", "safety"]
    assert all("StructuredOutputError" in f["error"] for f in checked["failures"])
    assert STRUCTURED_COUNTS.snapshot()["validate"]["failed"] == 2


def test_a_moderator_that_never_complies_leaves_rounds_without_consensus(
    settings: Settings,
) -> None:
    context = context_with(settings, fake("We all seem to agree, more or less."))
    events: list[WorkflowEvent] = []
    outcome = run_workflow(
        "meeting",
        {"topic": "Pricing", "participants": ["researcher", "critic"], "rounds": 2},
        context=context,
        checkpointer=None,
        thread_id="t-mod",
        on_event=events.append,
    )
    assert outcome.status == "completed", outcome.message
    values = outcome.values
    assert [(a["round"], a["consensus"], a["agreement"]) for a in values["assessments"]] == [
        (1, False, None),
        (2, False, None),
    ]
    assert values["consensus"] is False
    assert len(values["transcript"]) == 4  # both rounds held: no false consensus stopped it
    assert values["summary"] == "We all seem to agree, more or less."
    judged = [
        e.data for e in events if e.kind == "custom" and (e.data or {})["type"] == "moderator"
    ]
    assert [(j or {})["agreement"] for j in judged] == [None, None]
    chat = [m.content for m in values["messages"] if m.name == "moderator"]
    assert chat[0].startswith("Round 1: no consensus yet (agreement unknown).")
    assert STRUCTURED_COUNTS.snapshot()["moderate"]["failed"] == 2


class WholeAnswerModel(BaseChatModel):
    """A chat model with neither tools nor native streaming: only ``_generate``."""

    @property
    def _llm_type(self) -> str:
        return "whole-answer"

    def _generate(self, messages: list[BaseMessage], stop: Any = None, **kwargs: Any) -> Any:
        return ChatResult(generations=[ChatGeneration(message=AIMessage("one whole answer"))])


def test_a_model_without_native_streaming_streams_as_one_chunk(settings: Settings) -> None:
    pipeline = ModelPipeline(settings, model=WholeAnswerModel(), price=FREE)
    model = pipeline.model_for("standard", agent="writer")
    chunks = [chunk.text for chunk in model.stream("hello")]
    assert "".join(chunks) == "one whole answer"
    assert len([c for c in chunks if c]) == 1


def test_a_model_with_no_price_is_refused_with_how_to_price_it(settings: Settings) -> None:
    with pytest.raises(ConfigError, match=r"'GenericFakeChatModel' has no price.*price=ModelPrice"):
        ModelPipeline(settings, model=fake("x"))


class ToolCallingFake(GenericFakeChatModel):
    """The fake with tool binding: it ignores the tools and replies from its script."""

    def bind_tools(
        self, tools: Sequence[Any], *, tool_choice: Any = None, **kwargs: Any
    ) -> Runnable[LanguageModelInput, AIMessage]:
        return self.bind(tools=list(tools), tool_choice=tool_choice, **kwargs)  # type: ignore[return-value]


@tool
def shout(text: str) -> str:
    """Say ``text`` loudly."""
    return text.upper() + "!"


def test_a_custom_tool_object_is_called_and_its_result_reaches_the_agent(
    settings: Settings,
) -> None:
    seen: list[list[BaseMessage]] = []
    script = iter(
        [
            AIMessage(EVERY_ANSWER),  # the plan
            AIMessage("", tool_calls=[{"name": "shout", "args": {"text": "go"}, "id": "c1"}]),
            AIMessage("the tool said GO!"),
            AIMessage("synthesis"),
        ]
    )

    class Watching(ToolCallingFake):
        def _generate(self, messages: list[BaseMessage], *args: Any, **kwargs: Any) -> Any:
            seen.append(list(messages))
            return super()._generate(messages, *args, **kwargs)

    researcher = AgentSpec(name="researcher", role="You are the researcher.", tools=(shout,))
    agents = AgentCatalog([*[a for a in BUILTIN_AGENTS if a.name != "researcher"], researcher])
    context = context_with(settings, Watching(messages=script), agents)
    done = build_orchestration_graph().compile().invoke(
        {"task": "Launch", "team": ["researcher"], "planner_picks": True,
         "require_approval": False},
        context=context,
    )  # fmt: skip
    assert done["contributions"][0]["text"] == "the tool said GO!"
    tool_reply = seen[2][-1]
    assert (tool_reply.type, tool_reply.text) == ("tool", "GO!")
    assert done["output"] == "synthesis"
    # the forced tool call came back as JSON in text: counted as read from text, at first try
    assert STRUCTURED_COUNTS.snapshot()["plan"]["steps"] == {"text": 1}
    assert STRUCTURED_COUNTS.snapshot()["plan"]["first_try"] == 1


class Down(GenericFakeChatModel):
    """A provider that is down: every call fails."""

    def _generate(self, *args: Any, **kwargs: Any) -> ChatResult:
        raise RuntimeError("provider down")


def priced_fakes(**extra: Any) -> Settings:
    """Settings whose price table lists the fake model (at 0, or as ``extra`` says)."""
    free = {"input_per_mtok": 0.0, "output_per_mtok": 0.0}
    prices = {"prices.GenericFakeChatModel": free, **extra}
    return load_settings(overrides={"cache.completion_enabled": False, **prices})


def down_then(model: BaseChatModel) -> Runnable[Any, Any]:
    """``model`` as the fallback of a provider that is down."""
    return Down(messages=iter([])).with_fallbacks([model])


@pytest.mark.parametrize(
    "wrap",
    [down_then, lambda model: model.bind(temperature=0.1)],
    ids=["with_fallbacks", "bind"],
)
def test_a_wrapped_chat_model_runs_all_three_workflows(
    wrap: Callable[[BaseChatModel], Runnable[Any, Any]],
) -> None:
    context = context_with(priced_fakes(), wrap(fake(EVERY_ANSWER)))  # type: ignore[arg-type]

    done = build_orchestration_graph().compile().invoke(
        {"task": "Plan a launch", "team": ["researcher"], "planner_picks": True,
         "require_approval": False},
        context=context,
    )  # fmt: skip
    assert done["output"] == EVERY_ANSWER
    assert meet_twice(context)["consensus"] is True
    (result,) = validate_one(context)["results"]
    assert result["status"] == "passed"
    calls = context.ledger.calls
    answered = [c for c in calls if c.outcome == "ok"]
    assert len(answered) == 3 + 4 + 2
    # every answer is recorded under the model that gave it, whatever the wrapper tried first
    assert {c.model for c in answered} == {"GenericFakeChatModel"}
    failed = [(c.model, c.outcome, c.error, c.cost_usd) for c in calls if c.outcome != "ok"]
    tried_first = context.pipeline.chosen.name if context.pipeline.chosen else None
    if tried_first == "Down":
        assert failed == [("Down", "error", "other", 0.0)] * len(answered)
    else:
        assert failed == []


DEAR = {"input_per_mtok": 1000.0, "output_per_mtok": 2000.0}


def test_a_fallback_answer_is_priced_as_the_fallback() -> None:
    settings = priced_fakes(**{"prices.GenericFakeChatModel": DEAR})
    pipeline = ModelPipeline(settings, model=down_then(fake("a b c")), price=FREE)
    ledger = RunLedger()
    chat = pipeline.model_for("fast", agent="writer", ledger=ledger)
    assert chat.invoke("go").text == "a b c"
    assert "".join(chunk.text for chunk in chat.stream("go")) == "a b c"
    calls = ledger.calls
    assert [(c.model, c.outcome, c.cost_usd) for c in calls[0::2]] == [("Down", "error", 0.0)] * 2
    for call in calls[1::2]:
        assert (call.model, call.outcome) == ("GenericFakeChatModel", "ok")
        paid = (call.input_tokens * 1000.0 + call.output_tokens * 2000.0) / 1e6
        assert call.cost_usd == pytest.approx(paid)
        assert call.cost_usd > 0
    assert ledger.spent_usd == pytest.approx(sum(c.cost_usd for c in calls))


async def test_a_fallback_answer_is_recorded_as_the_fallback_async_and_streamed() -> None:
    pipeline = ModelPipeline(priced_fakes(), model=down_then(fake("a b c")), price=FREE)
    ledger = RunLedger()
    chat = pipeline.model_for("fast", agent="writer", ledger=ledger)
    assert (await chat.ainvoke("go")).text == "a b c"
    assert "".join([chunk.text async for chunk in chat.astream("go")]) == "a b c"
    assert [(c.model, c.outcome) for c in ledger.calls] == [
        ("Down", "error"),
        ("GenericFakeChatModel", "ok"),
    ] * 2


def test_a_fallback_chain_holds_the_budget_at_its_dearest_model() -> None:
    # the primary is free, its fallback is not: a budget that fits a call of the primary but
    # not one of the fallback stops the call before it is sent (settled spend never passes it)
    settings = priced_fakes(**{"prices.GenericFakeChatModel": DEAR})
    pipeline = ModelPipeline(settings, model=down_then(fake("a b c")), price=FREE)
    ledger = RunLedger(budget_usd=0.001)
    chat = pipeline.model_for("fast", agent="writer", ledger=ledger)
    with pytest.raises(BudgetExceededError):
        chat.invoke("go")
    (refused,) = ledger.calls  # sent nothing
    assert (refused.outcome, refused.attempts, ledger.spent_usd) == ("cancelled", 0, 0.0)


def test_a_fallback_with_no_price_is_refused_naming_it(settings: Settings) -> None:
    brought = fake("x").with_fallbacks([WholeAnswerModel()])
    with pytest.raises(ConfigError) as caught:
        ModelPipeline(settings, model=brought, price=FREE)
    message = str(caught.value)
    assert message.startswith("fallback model 'WholeAnswerModel' has no price")
    assert "\n" not in message


@pytest.mark.parametrize(
    "brought",
    [
        lambda: fake("x").with_retry(stop_after_attempt=2),
        lambda: fake("x").bind(temperature=0).with_retry(),
        lambda: fake("x").with_fallbacks([fake("y").with_retry()]),
    ],
    ids=["with_retry", "bound", "in_a_fallback"],
)
def test_a_model_retrying_on_its_own_is_refused_in_one_line(
    settings: Settings, brought: Callable[[], Runnable[Any, Any]]
) -> None:
    with pytest.raises(ConfigError) as caught:
        ModelPipeline(settings, model=brought(), price=FREE)
    message = str(caught.value)
    assert message.startswith("model is wrapped by .with_retry()")
    assert "drop .with_retry()" in message
    assert "\n" not in message


async def test_a_wrapped_chat_model_answers_async_and_streams(settings: Settings) -> None:
    pipeline = ModelPipeline(settings, model=fake("a b c").bind(temperature=0), price=FREE)
    chat = pipeline.model_for("fast", agent="writer")
    assert (await chat.ainvoke("go")).text == "a b c"
    assert "".join([chunk.text async for chunk in chat.astream("go")]) == "a b c"


@pytest.mark.parametrize(
    "brought",
    [
        42,
        RunnableLambda(lambda value: value),
        fake("x").with_fallbacks([RunnableLambda(lambda value: AIMessage("canned"))]),
    ],
    ids=["number", "lambda", "lambda_fallback"],
)
def test_something_that_is_no_chat_model_is_a_config_error(
    settings: Settings, brought: object
) -> None:
    with pytest.raises(ConfigError, match="give a LangChain chat model"):
        ModelPipeline(settings, model=brought, price=FREE)  # type: ignore[arg-type]


class LazyClientModel(GenericFakeChatModel):
    """A model whose client is built from ``max_retries`` on first use, as
    langchain-anthropic's is; it answers with the retries its client was built with."""

    max_retries: int = 2

    @functools.cached_property
    def client(self) -> dict[str, int]:
        return {"max_retries": self.max_retries}

    def _generate(self, *args: Any, **kwargs: Any) -> ChatResult:
        answer = AIMessage(f"retries {self.client['max_retries']}")
        return ChatResult(generations=[ChatGeneration(message=answer)])


@pytest.mark.parametrize(
    "wrap", [lambda model: model, lambda model: model.bind(stop=["."])], ids=["bare", "bind"]
)
def test_a_brought_client_is_called_with_its_own_retries_off(
    settings: Settings, wrap: Callable[[BaseChatModel], Any]
) -> None:
    brought = LazyClientModel(messages=iter([]))
    assert brought.client == {"max_retries": 2}  # built before the pipeline gets the model
    chat = ModelPipeline(settings, model=wrap(brought), price=FREE).model_for("fast", agent="w")
    assert chat.invoke("go").text == "retries 0"
    assert brought.client == {"max_retries": 2}  # the user's own model is left as it was


def test_a_hit_on_a_model_reporting_no_usage_saves_what_the_answer_first_cost() -> None:
    settings = load_settings()  # the completion cache on
    price = ModelPrice(input_per_mtok=1.0, output_per_mtok=2.0)
    brought = FakeListChatModel(responses=["a short answer"])  # no usage_metadata
    pipeline = ModelPipeline(settings, model=brought, price=price)
    ledger = RunLedger()
    chat = pipeline.model_for("fast", agent="writer", ledger=ledger)
    chat.invoke("Summarise the plan")
    chat.invoke("Summarise the plan")
    first, hit = ledger.calls
    assert (first.outcome, first.estimated) == ("ok", True)
    assert first.cost_usd > 0
    assert (hit.outcome, hit.cost_usd) == ("cached", 0.0)
    assert hit.saved_usd == first.cost_usd


def test_json_steps_reach_a_model_behind_adaptive_backpressure(settings: Settings) -> None:
    openai = ChatOpenAI(
        model="gpt-4o-mini", base_url="http://127.0.0.1:9/v1", api_key=SecretStr("k")
    )
    pipeline = ModelPipeline(settings, model=AdaptiveBackpressure(openai))
    model = pipeline.model_for("standard", agent="moderator")
    parameters = {"type": "object", "properties": {"consensus": {"type": "boolean"}}}
    tool = {"type": "function", "function": {"name": "Verdict", "parameters": parameters}}
    bound = bind_step(model, "json_schema", tool=tool)
    assert isinstance(bound, RunnableBinding)
    assert bound.kwargs["response_format"]["type"] == "json_schema"


@pytest.mark.parametrize("wrap", ["plain", "fallbacks"])
def test_a_brought_model_is_limited_under_the_server_it_names(
    settings: Settings, wrap: str
) -> None:
    """Controllers are keyed by provider, base URL and model: a ``ChatOpenAI`` brought with a
    local server's ``base_url`` is not paced (nor paused by 429s) as OpenAI's same-named model,
    nor the wrapper of one as its backup's server."""
    local = "http://127.0.0.1:9/v1"
    brought: Any = ChatOpenAI(model="gpt-4o-mini", base_url=local, api_key=SecretStr("x"))
    if wrap == "fallbacks":
        backup = ChatOpenAI(
            model="gpt-4o", base_url="http://127.0.0.1:10/v1", api_key=SecretStr("x")
        )
        brought = brought.with_fallbacks([backup])
    pipeline = ModelPipeline(settings, model=brought)
    configured = ModelPipeline(
        settings.model_copy(update={"provider": "openai", "openai_api_key": SecretStr("x")})
    )
    controller = pipeline.controller_for("gpt-4o-mini")
    assert controller is not configured.controller_for("gpt-4o-mini")
    assert controller.gate is not configured.controller_for("gpt-4o-mini").gate
    wired = pipeline.model_for("standard", agent="analyst")
    assert wired.base_url == local  # type: ignore[attr-defined]
    assert configured.base_url_of("gpt-4o-mini") is None  # the SDK's default: OpenAI's
