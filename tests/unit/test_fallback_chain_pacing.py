"""A brought ``primary.with_fallbacks([backup])`` model: the primary's 429 reaches the
controller that paces it although the backup answered, the chain's calls go straight to the
backup while the primary's ``Retry-After`` pause runs, and a cache hit of the backup's answer
is recorded and priced as the backup."""

from __future__ import annotations

import asyncio
import operator
import time
from typing import Annotated, Any, TypedDict

import httpx2
import openai
import pytest
from langchain_core.language_models import BaseChatModel, GenericFakeChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.messages.ai import UsageMetadata
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.runnables.fallbacks import RunnableWithFallbacks
from langgraph.graph import START, StateGraph
from pydantic import Field

from multiagent.models._chain_members import chat_models_in
from multiagent.models._chain_watch import MEMBER_KEY
from multiagent.models._runnable_model import RunnableChatModel
from multiagent.models.adaptive import shared_controllers
from multiagent.models.backpressure import BackpressureController
from multiagent.models.pipeline import ModelPipeline, RunLedger
from multiagent.policies import ModelPrice, Settings, load_settings

FREE = ModelPrice(input_per_mtok=0.0, output_per_mtok=0.0)
DEAR = {"input_per_mtok": 1000.0, "output_per_mtok": 2000.0}


class RateLimited(GenericFakeChatModel):
    """A provider refusing every request with a 429 that asks for a 30 s pause; ``asked``
    counts the requests (the pipeline's copies of the model share the list)."""

    asked: list[str] = Field(default_factory=list)

    def _generate(self, *args: Any, **kwargs: Any) -> ChatResult:
        self.asked.append("go")
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


def chain(
    pipeline_settings: Settings, *, primary: RateLimited | None = None
) -> tuple[ModelPipeline, Any, RunLedger]:
    brought = (primary or RateLimited(messages=iter([]))).with_fallbacks([Backup()])
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
    assert controller.poll(ticket) > 0.0  # nothing is sent to the primary before it ends
    controller.cancel(ticket)


def controller_of(model: str) -> BackpressureController:
    """The process's controller of ``model``, as the registry keys it (by the member's own
    provider, server and name)."""
    (found,) = [c for (_, name, _), c in shared_controllers().items() if name == model]
    return found


def answers(controller: BackpressureController) -> int:
    """The outcomes the controller heard (answers and failures)."""
    return controller.state().samples


HOWS = ["invoke", "ainvoke", "stream", "astream"]


@pytest.mark.parametrize("how", HOWS)
async def test_while_the_primary_is_paused_the_backup_answers_at_once_under_its_own_controller(
    how: str,
) -> None:
    primary = RateLimited(messages=iter([]))
    _, chat, ledger = chain(settings_with(cache=False), primary=primary)
    assert await ask(chat, how) == "a b c"  # the primary's 429 pauses its gate for 30 s
    paused, backup = controller_of("RateLimited"), controller_of("Backup")
    before = (answers(paused), answers(backup))
    del ledger.calls[:]

    assert await ask(chat, how) == "a b c"
    assert primary.asked == ["go"]  # nothing more was sent to the paused primary
    assert [(c.model, c.outcome) for c in ledger.calls] == [("Backup", "ok")]
    # paced by the backup's controller, sent at once; the primary's heard nothing
    assert (answers(paused), answers(backup)) == (before[0], before[1] + 1)
    assert paused.gate is not backup.gate
    assert backup.paused_for() == 0.0
    assert 0.0 < paused.paused_for() <= 30.0
    for controller in (paused, backup):
        state = controller.state()
        assert (state.in_flight, state.queued) == (0, 0)


@pytest.mark.parametrize("how", HOWS)
async def test_once_the_primarys_pause_is_over_the_chain_starts_with_the_primary_again(
    how: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    primary = RateLimited(messages=iter([]))
    _, chat, ledger = chain(settings_with(cache=False), primary=primary)
    await ask(chat, how)
    await ask(chat, how)  # routed to the backup
    paused = controller_of("RateLimited")
    later = time.monotonic() + 31.0  # the primary's clocks moved past its 30 s pause
    monkeypatch.setattr(paused, "_clock", lambda: later)
    monkeypatch.setattr(paused.gate, "_clock", lambda: later)
    assert paused.paused_for() == 0.0
    del ledger.calls[:]

    assert await ask(chat, how) == "a b c"
    assert primary.asked == ["go", "go"]
    assert [(c.model, c.outcome) for c in ledger.calls] == [
        ("RateLimited", "error"),
        ("Backup", "ok"),
    ]


async def test_with_every_member_paused_the_call_waits_at_the_primarys_gate() -> None:
    primary = RateLimited(messages=iter([]))
    _, chat, _ = chain(settings_with(cache=False), primary=primary)
    await chat.ainvoke("go")
    paused, backup = controller_of("RateLimited"), controller_of("Backup")
    backup.gate.pause(30.0)  # the backup's endpoint told to wait too

    waiting = asyncio.create_task(chat.ainvoke("go"))
    for _ in range(20):
        await asyncio.sleep(0)
    assert (paused.state().queued, backup.state().queued) == (1, 0)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert primary.asked == ["go"]  # nothing was sent during the pause


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


def test_a_chain_from_a_later_member_keeps_the_order_bindings_and_numbers_of_the_rest() -> None:
    first, second, third = (GenericFakeChatModel(messages=iter([]), name=n) for n in "abc")
    nested = first.with_fallbacks([second.bind(stop=["x"])]).with_fallbacks([third])
    wrapper = RunnableChatModel.wrapping(nested, members=[("fake", n) for n in "abc"])

    def tried(index: int) -> list[tuple[str | None, int]]:
        models = chat_models_in(wrapper.from_member(index).runnable)
        return [(m.name, (m.metadata or {})[MEMBER_KEY]) for m in models]

    assert tried(1) == [("b", 1), ("c", 2)]
    assert tried(2) == [("c", 2)]
    assert isinstance(wrapper.from_member(1).runnable, RunnableWithFallbacks)
    with pytest.raises(IndexError):
        wrapper.from_member(3)
