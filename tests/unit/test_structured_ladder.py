"""The structured-output ladder: each step exercised, repair bounded, failures counted."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from langchain_core.language_models import GenericFakeChatModel, LanguageModelInput
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langchain_core.runnables import Runnable
from pydantic import BaseModel, Field

from multiagent.models.structured import (
    STRUCTURED_COUNTS,
    StructuredOutputError,
    arun_structured,
    json_from_text,
    known_method,
    reset_structured_state,
    run_structured,
)


class Answer(BaseModel):
    verdict: str = Field(min_length=1)
    score: float = Field(ge=0.0, le=1.0)


class ToolingFakeModel(GenericFakeChatModel):
    """A scripted model that accepts tools (and ignores them, as a weak model may)."""

    def bind_tools(
        self, tools: Sequence[Any], *, tool_choice: Any = None, **kwargs: Any
    ) -> Runnable[LanguageModelInput, AIMessage]:
        return self.bind(tools=list(tools), tool_choice=tool_choice, **kwargs)  # type: ignore[return-value]


@pytest.fixture(autouse=True)
def fresh_state() -> Iterator[None]:
    reset_structured_state()
    yield
    reset_structured_state()


def scripted(*replies: str | AIMessage, tools: bool = False) -> GenericFakeChatModel:
    messages = iter([AIMessage(r) if isinstance(r, str) else r for r in replies])
    return ToolingFakeModel(messages=messages) if tools else GenericFakeChatModel(messages=messages)


PROMPT: list[BaseMessage] = [HumanMessage("Judge the text.")]


class Recorder:
    """Invokes like a node does, keeping every request's messages."""

    def __init__(self) -> None:
        self.sent: list[list[BaseMessage]] = []

    def __call__(self, runnable: Runnable[Any, BaseMessage], messages: list[BaseMessage]) -> Any:
        self.sent.append(messages)
        return runnable.invoke(messages)


def test_a_forced_tool_call_is_the_first_step() -> None:
    reply = AIMessage(
        "", tool_calls=[{"name": "Answer", "args": {"verdict": "ok", "score": 0.5}, "id": "1"}]
    )
    outcome = run_structured(scripted(reply, tools=True), PROMPT, Answer, node="validate")
    assert (outcome.step, outcome.result, outcome.calls) == ("tool_call", "first_try", 1)
    assert outcome.value == Answer(verdict="ok", score=0.5)
    assert STRUCTURED_COUNTS.snapshot()["validate"]["first_try"] == 1


def test_a_model_without_tools_answers_fenced_json_in_text() -> None:
    model = scripted('Here it is:\n```json\n{"verdict": "fine", "score": 0.9}\n```\nDone.')
    recorder = Recorder()
    outcome = run_structured(model, PROMPT, Answer, invoke=recorder, node="validate")
    assert (outcome.step, outcome.result, outcome.calls) == ("text", "first_try", 1)
    assert outcome.value.score == 0.9
    # the text step says what to write: the schema is in the prompt
    assert '"score"' in recorder.sent[0][-1].text
    assert known_method(model) == "text"


def test_a_model_that_ignores_the_forced_tool_falls_to_text() -> None:
    model = scripted("I think it is fine.", '{"verdict": "fine", "score": 0.7}', tools=True)
    outcome = run_structured(model, PROMPT, Answer, node="moderate")
    assert (outcome.step, outcome.result, outcome.calls) == ("text", "fallback", 2)
    assert STRUCTURED_COUNTS.snapshot()["moderate"]["fallback"] == 1


def test_one_repair_round_sends_the_validation_error_back() -> None:
    model = scripted('{"verdict": "fine", "score": 7}', '{"verdict": "fine", "score": 0.7}')
    recorder = Recorder()
    outcome = run_structured(model, PROMPT, Answer, invoke=recorder, node="plan")
    assert (outcome.step, outcome.result, outcome.calls) == ("text", "after_repair", 2)
    repair = recorder.sent[1]
    assert repair[-2].text == '{"verdict": "fine", "score": 7}'  # the bad answer, as text
    assert "score" in repair[-1].text
    assert "less than or equal to 1" in repair[-1].text
    assert STRUCTURED_COUNTS.snapshot()["plan"]["after_repair"] == 1


def test_a_model_that_never_complies_fails_after_a_bounded_number_of_calls() -> None:
    model = scripted(*["Sorry, I cannot do JSON."] * 10, tools=True)
    recorder = Recorder()
    with pytest.raises(StructuredOutputError, match="no valid 'Answer' answer after 3 call"):
        run_structured(model, PROMPT, Answer, invoke=recorder, node="plan")
    # tool step (prose: no repair), text step, one repair of the text step
    assert len(recorder.sent) == 3
    assert STRUCTURED_COUNTS.snapshot()["plan"]["failed"] == 1
    assert known_method(model) is None


def test_a_provider_failure_is_not_hidden_by_the_ladder() -> None:
    class Broken(GenericFakeChatModel):
        def _generate(self, *args: Any, **kwargs: Any) -> Any:
            raise TimeoutError("the provider timed out")

    with pytest.raises(TimeoutError):
        run_structured(Broken(messages=iter([])), PROMPT, Answer)
    assert STRUCTURED_COUNTS.snapshot() == {}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"a": 1}', {"a": 1}),
        ('```\n{"a": 1}\n```', {"a": 1}),
        ('Sure! {"a": {"b": 2}} hope that helps', {"a": {"b": 2}}),
        # a small model (SmolLM2 in JSON mode) writes a raw newline inside a string, which
        # tool-call arguments already accept (LangChain parses them with strict=False)
        ('{"a": "two\nlines"} ', {"a": "two\nlines"}),
    ],
)
def test_json_is_read_from_bare_fenced_and_embedded_text(text: str, expected: Any) -> None:
    assert json_from_text(text) == expected


def test_text_without_json_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="no JSON"):
        json_from_text("no braces here")


def test_the_async_driver_walks_the_same_ladder() -> None:
    model = scripted("Sorry, no.", '{"verdict": "fine", "score": 0.2}', tools=True)
    outcome = asyncio.run(arun_structured(model, PROMPT, Answer, node="validate"))
    assert (outcome.step, outcome.result, outcome.calls) == ("text", "fallback", 2)
    assert STRUCTURED_COUNTS.snapshot()["validate"]["fallback"] == 1


def test_a_server_error_to_a_tool_call_is_the_provider_failing_not_a_refusal() -> None:
    import openai

    from multiagent.sim.model import SimulatedChatModel

    down = SimulatedChatModel(model="gpt-4o-mini", server_error_rate=1.0)
    recorder = Recorder()
    with pytest.raises(openai.InternalServerError):
        run_structured(down, PROMPT, Answer, invoke=recorder)
    assert len(recorder.sent) == 1  # no second call per structured answer in an outage


def test_a_schema_is_converted_once_and_each_call_gets_its_own_copy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import multiagent.models.structured as structured

    class Once(BaseModel):  # a class of its own: no earlier test converted it
        verdict: str

    built: list[type[BaseModel]] = []
    convert = structured.convert_to_openai_tool

    def counting(schema: Any) -> dict[str, Any]:
        built.append(schema)
        return convert(schema)

    monkeypatch.setattr(structured, "convert_to_openai_tool", counting)
    reply = '{"verdict": "ok"}'
    for _ in range(3):
        assert run_structured(scripted(reply), PROMPT, Once).value.verdict == "ok"
    assert built == [Once]
    first = structured.tool_of(Once)
    first["function"]["name"] = "edited"  # a provider editing what it was given changes no other
    assert structured.tool_of(Once)["function"]["name"] == "Once"


def test_a_reply_nesting_brackets_past_the_parsers_limit_is_no_json_not_a_crash() -> None:
    degenerate = '{"verdict": ' + "[" * 5000  # a small model repeating one token to its bound
    with pytest.raises(ValueError, match="no JSON object"):
        json_from_text(degenerate)

    with pytest.raises(StructuredOutputError, match="no JSON object"):
        run_structured(scripted(degenerate, degenerate), PROMPT, Answer, max_repairs=1)
