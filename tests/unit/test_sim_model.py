"""The in-process simulated chat model: determinism, streaming, usage, structured output, faults."""

from __future__ import annotations

import enum
from typing import Literal

import openai
import pytest
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolMessage
from pydantic import BaseModel, Field

from multiagent.sim.model import SimulatedChatModel, message_pairs, prompt_tokens
from multiagent.sim.text import count_tokens, split_tokens

TASK = "Assess the plan to migrate the billing service to PostgreSQL before the audit."


def _messages(system: str, task: str = TASK) -> list[BaseMessage]:
    return [SystemMessage(system), HumanMessage(task)]


RESEARCHER = _messages("You are the researcher: gather facts and sources.")
CRITIC = _messages("You are the critic: find risks and weaknesses.")


def test_same_model_messages_and_seed_give_the_same_reply() -> None:
    first = SimulatedChatModel(model="gpt-4o-mini", seed=3).invoke(RESEARCHER)
    again = SimulatedChatModel(model="gpt-4o-mini", seed=3).invoke(RESEARCHER)
    assert first.content == again.content
    assert first.content
    other_seed = SimulatedChatModel(model="gpt-4o-mini", seed=4).invoke(RESEARCHER)
    other_model = SimulatedChatModel(model="gpt-4o", seed=3).invoke(RESEARCHER)
    assert other_seed.content != first.content
    assert other_model.content != first.content


def test_roles_and_tasks_shape_the_text_and_it_names_the_task() -> None:
    model = SimulatedChatModel()
    research = model.invoke(RESEARCHER).text
    critique = model.invoke(CRITIC).text
    other_task = model.invoke(_messages(CRITIC[0].text, "Design a caching layer for search.")).text
    assert len({research, critique, other_task}) == 3
    assert "migrate the billing service" in research
    assert "migrate the billing service" in critique
    assert "caching layer" in other_task
    assert "billing" not in other_task
    assert research.startswith(("Research notes", "What the evidence says"))
    assert critique.startswith(("Critique of", "Risks and gaps"))


def test_stream_joins_to_invoke_and_carries_usage() -> None:
    model = SimulatedChatModel(model="gpt-4o", seed=1)
    reply = model.invoke(CRITIC)
    chunks = list(model.stream(CRITIC))
    assert len(chunks) > 5  # token by token, not one blob
    assert "".join(chunk.text for chunk in chunks) == reply.text
    joined = chunks[0]
    for chunk in chunks[1:]:
        joined = joined + chunk
    assert joined.usage_metadata == reply.usage_metadata


async def test_async_stream_joins_to_async_invoke() -> None:
    model = SimulatedChatModel(seed=9)
    reply = await model.ainvoke(RESEARCHER)
    pieces = [chunk.text async for chunk in model.astream(RESEARCHER)]
    assert "".join(pieces) == reply.text
    assert reply.text == model.invoke(RESEARCHER).text


def test_usage_metadata_counts_prompt_and_reply() -> None:
    reply = SimulatedChatModel().invoke(CRITIC)
    assert isinstance(reply, AIMessage)
    usage = reply.usage_metadata
    assert usage is not None
    assert usage["input_tokens"] == prompt_tokens(message_pairs(CRITIC))
    assert usage["output_tokens"] == count_tokens(reply.text)
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]


def test_max_tokens_and_stop_cut_the_reply() -> None:
    full = SimulatedChatModel().invoke(CRITIC).text
    cut = SimulatedChatModel(max_tokens=5).invoke(CRITIC)
    assert full.startswith(cut.text)
    assert cut.response_metadata["finish_reason"] == "length"
    # max_tokens caps the reported usage, as a real provider's does, and nothing more fits
    assert cut.usage_metadata is not None
    assert cut.usage_metadata["output_tokens"] <= 5
    longer = "".join(split_tokens(full)[: len(split_tokens(cut.text)) + 1])
    assert count_tokens(longer) > 5
    marker = full.split()[3]
    stopped = SimulatedChatModel().invoke(CRITIC, stop=[marker])
    assert marker not in stopped.text
    assert full.startswith(stopped.text)


class Severity(enum.Enum):
    LOW = "low"
    HIGH = "high"


class Finding(BaseModel):
    claim: str = Field(min_length=3, max_length=40)
    severity: Severity
    confidence: float = Field(ge=0.5, le=0.9)


class Review(BaseModel):
    verdict: Literal["accept", "revise", "reject"]
    score: int = Field(ge=1, le=5)
    findings: list[Finding] = Field(min_length=1, max_length=3)
    summary: str | None = None
    reviewer: Finding | None = None


def test_structured_output_is_a_valid_deterministic_instance() -> None:
    model = SimulatedChatModel(seed=2)
    first = model.with_structured_output(Review).invoke(CRITIC)
    assert isinstance(first, Review)
    Review.model_validate(first.model_dump())  # bounds, enums and nesting hold
    assert 1 <= first.score <= 5
    assert all(0.5 <= f.confidence <= 0.9 and 3 <= len(f.claim) <= 40 for f in first.findings)
    assert model.with_structured_output(Review).invoke(CRITIC) == first
    other = model.with_structured_output(Review).invoke(RESEARCHER)
    assert other != first


def test_tool_calls_are_schema_valid_and_auto_answers_after_a_result() -> None:
    def lookup(account_id: int, region: Literal["eu", "us"]) -> str:
        """Look up an account."""
        return "ok"

    model = SimulatedChatModel().bind_tools([lookup])
    call = model.invoke(CRITIC)
    assert isinstance(call, AIMessage)
    assert call.tool_calls[0]["name"] == "lookup"
    assert call.tool_calls[0]["args"]["region"] in ("eu", "us")
    assert isinstance(call.tool_calls[0]["args"]["account_id"], int)
    after = model.invoke(
        [*CRITIC, call, ToolMessage("found", tool_call_id=call.tool_calls[0]["id"])]
    )
    assert isinstance(after, AIMessage)
    assert not after.tool_calls
    assert after.text


def _outcomes(fault_seed: int, calls: int = 40) -> list[str]:
    model = SimulatedChatModel(
        rate_limit_error_rate=0.2, server_error_rate=0.2, timeout_rate=0.2, fault_seed=fault_seed
    )
    outcomes = []
    for _ in range(calls):
        try:
            model.invoke(CRITIC)
            outcomes.append("ok")
        except openai.APIError as exc:
            outcomes.append(type(exc).__name__)
    return outcomes


def test_faults_are_deterministic_by_fault_seed() -> None:
    first = _outcomes(5)
    assert first == _outcomes(5)
    assert first != _outcomes(6)
    assert set(first) == {"ok", "RateLimitError", "InternalServerError", "APITimeoutError"}


def test_rate_limit_fault_carries_retry_after_headers() -> None:
    model = SimulatedChatModel(rate_limit_error_rate=1.0, retry_after_s=1.2)
    with pytest.raises(openai.RateLimitError) as caught:
        model.invoke(CRITIC)
    assert caught.value.status_code == 429
    assert caught.value.response.headers["retry-after"] == "2"  # whole seconds, rounded up
    assert caught.value.response.headers["retry-after-ms"] == "1200"
    with pytest.raises(openai.RateLimitError):
        list(model.stream(CRITIC))


def test_server_error_and_timeout_faults() -> None:
    with pytest.raises(openai.InternalServerError) as caught:
        SimulatedChatModel(server_error_rate=1.0).invoke(CRITIC)
    assert caught.value.status_code == 500
    with pytest.raises(openai.APITimeoutError):
        SimulatedChatModel(timeout_rate=1.0).invoke(CRITIC)
