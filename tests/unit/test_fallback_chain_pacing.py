"""A brought ``primary.with_fallbacks([backup])`` model: the primary's 429 reaches the
controller that paces it although the backup answered, and a cache hit of the backup's answer
is recorded and priced as the backup."""

from __future__ import annotations

import operator
from typing import Annotated, Any, TypedDict

import httpx2
import openai
import pytest
from langchain_core.language_models import BaseChatModel, GenericFakeChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.messages.ai import UsageMetadata
from langchain_core.outputs import ChatGeneration, ChatResult
from langgraph.graph import START, StateGraph

from multiagent.models.pipeline import ModelPipeline, RunLedger
from multiagent.policies import ModelPrice, Settings, load_settings

FREE = ModelPrice(input_per_mtok=0.0, output_per_mtok=0.0)
DEAR = {"input_per_mtok": 1000.0, "output_per_mtok": 2000.0}


class RateLimited(GenericFakeChatModel):
    """A provider refusing every request with a 429 that asks for a 30 s pause."""

    def _generate(self, *args: Any, **kwargs: Any) -> ChatResult:
        request = httpx2.Request("POST", "http://127.0.0.1/v1/chat/completions")
        response = httpx2.Response(429, headers={"retry-after": "30"}, request=request)
        raise openai.RateLimitError("slow down", response=response, body=None)


class Backup(BaseChatModel):
    """A provider answering every request whole, with the tokens it counted (a stream of it is
    one chunk: the answer's usage is then the same however it was asked)."""

    @property
    def _llm_type(self) -> str:
        return "backup"

    def _generate(self, *args: Any, **kwargs: Any) -> ChatResult:
        usage = UsageMetadata(input_tokens=9, output_tokens=3, total_tokens=12)
        answer = AIMessage("a b c", usage_metadata=usage)
        return ChatResult(generations=[ChatGeneration(message=answer)])


def settings_with(*, cache: bool) -> Settings:
    """The backup priced dear (the primary is priced free by the pipeline's ``price``)."""
    return load_settings(overrides={"cache.completion_enabled": cache, "prices.Backup": DEAR})


def chain(pipeline_settings: Settings) -> tuple[ModelPipeline, Any, RunLedger]:
    brought = RateLimited(messages=iter([])).with_fallbacks([Backup()])
    pipeline = ModelPipeline(pipeline_settings, model=brought, price=FREE)
    ledger = RunLedger()
    return pipeline, pipeline.model_for("fast", agent="writer", ledger=ledger), ledger


async def ask(chat: Any, how: str) -> str:
    """One call of ``chat`` made as ``how`` says; the text it answered."""
    if how == "invoke":
        message: BaseMessage = chat.invoke("go")
        return message.text
    if how == "ainvoke":
        message = await chat.ainvoke("go")
        return message.text
    if how == "stream":
        return "".join(chunk.text for chunk in chat.stream("go"))
    return "".join([chunk.text async for chunk in chat.astream("go")])


@pytest.mark.parametrize("how", ["invoke", "ainvoke", "stream", "astream"])
async def test_the_primarys_429_pauses_and_slows_its_controller_while_the_backup_answers(
    how: str,
) -> None:
    pipeline, chat, ledger = chain(settings_with(cache=False))
    assert await ask(chat, how) == "a b c"
    assert [(c.model, c.outcome, c.error) for c in ledger.calls] == [
        ("RateLimited", "error", "rate_limit"),
        ("Backup", "ok", None),
    ]
    controller = pipeline.controller_for("RateLimited")
    state = controller.state()
    # heard as a plain model's 429: its Retry-After holds the primary's next sends, the pace cut
    assert (controller.gate.pauses, state.rate_cuts) == (1, 1)
    assert 0.0 < state.paused_for_s <= 30.0
    assert (state.in_flight, state.queued) == (0, 0)  # the slot was given back once
    ticket = controller.request()
    assert controller.poll(ticket) > 0.0  # the chain's next call waits out the pause
    controller.cancel(ticket)


class Asked(TypedDict):
    answers: Annotated[list[str], operator.add]


def streamed(chat: Any) -> str:
    """One call of ``chat`` in a graph streamed in LangGraph's ``messages`` mode (a streaming
    callback: the call streams through the completion cache's path); the text streamed."""

    def answer(state: Asked) -> dict[str, list[str]]:
        return {"answers": [chat.invoke("go").text]}

    graph = StateGraph(Asked).add_node("answer", answer).add_edge(START, "answer").compile()
    chunks = list(graph.stream({"answers": []}, stream_mode="messages"))
    return "".join(str(message.content) for message, _ in chunks)


@pytest.mark.parametrize("streams", [False, True], ids=["invoked", "streamed"])
def test_a_hit_of_the_backups_answer_is_recorded_and_priced_as_the_backup(streams: bool) -> None:
    _, chat, ledger = chain(settings_with(cache=True))
    assert (streamed(chat) if streams else chat.invoke("go").text) == "a b c"
    assert chat.invoke("go").text == "a b c"
    refused, answered, hit = ledger.calls
    assert (refused.model, refused.outcome) == ("RateLimited", "error")
    assert (answered.model, answered.outcome) == ("Backup", "ok")
    assert (answered.input_tokens, answered.output_tokens, answered.estimated) == (9, 3, False)
    # the answer first cost the backup's rates, not the free primary's
    assert (hit.model, hit.outcome, hit.cost_usd) == ("Backup", "cached", 0.0)
    assert hit.saved_usd == pytest.approx(answered.cost_usd)


def test_a_backups_answer_carries_its_cost_at_the_backups_rates_for_tracing() -> None:
    _, chat, ledger = chain(settings_with(cache=False))
    usage: dict[str, Any] = dict(chat.invoke("go").usage_metadata or {})
    answered = ledger.calls[-1]
    # LangSmith's fields: the parts add up to the record's cost, each at the backup's rates
    assert usage["input_cost"] == pytest.approx(9 * 1000.0 / 1e6)
    assert usage["output_cost"] == pytest.approx(3 * 2000.0 / 1e6)
    assert usage["total_cost"] == pytest.approx(answered.cost_usd)
