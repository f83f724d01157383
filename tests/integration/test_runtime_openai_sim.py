"""The model runtime through the real ChatOpenAI client against the simulator over HTTP."""

from __future__ import annotations

import asyncio
import json
import operator
import urllib.request
from collections.abc import Iterator
from typing import Annotated, Any

import pytest
from langchain_core.messages import AIMessageChunk
from langchain_openai import ChatOpenAI
from langgraph.graph import END, START, StateGraph
from typing_extensions import TypedDict

from multiagent.models.adaptive import (
    AdaptiveBackpressure,
    reset_shared_controllers,
    shared_controller,
)
from multiagent.models.backpressure import BackpressureConfig
from multiagent.models.batch import create_batch_completions
from multiagent.models.pipeline import ModelPipeline, RunLedger
from multiagent.models.retry import RetryPolicy
from multiagent.policies import load_settings
from multiagent.sim import SimServerConfig, run_sim_server
from tests.integration._openai_sim import openai_sim


@pytest.fixture(autouse=True)
def fresh_controllers() -> Iterator[None]:
    reset_shared_controllers()
    yield
    reset_shared_controllers()


def stats(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url.removesuffix("/v1") + "/sim/stats", timeout=5) as response:
        return dict(json.loads(response.read()))


@pytest.fixture
def sim_url(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    with openai_sim(monkeypatch, SimServerConfig(rpm=1200, tpm=1_000_000)) as url:
        yield url


class State(TypedDict):
    question: str
    answers: Annotated[list[str], operator.add]


def test_pipeline_calls_chatopenai_learns_limits_and_caches_while_streaming(sim_url: str) -> None:
    settings = load_settings(provider="openai")
    pipeline = ModelPipeline(settings, retry=RetryPolicy(attempts=3, base_s=0.01))
    ledger = RunLedger()
    model = pipeline.model_for("standard", agent="writer", ledger=ledger)

    reply = model.invoke("Name three risks of the migration")
    assert reply.text
    assert "headers" not in reply.response_metadata
    (call,) = ledger.calls
    assert call.provider == "openai"
    assert call.input_tokens > 0
    assert call.output_tokens > 0
    served = stats(sim_url)["totals"]
    assert (served["successes"], served["prompt_tokens"]) == (1, call.input_tokens)
    state = pipeline.controller_for(call.model).state()
    assert state.advertised_requests_per_s == pytest.approx(20.0)  # 1200 rpm, from headers
    # the profile's rate is where the pace starts; the provider's advertised limit replaces it
    assert settings.profile.rate_limit.requests_per_minute / 60 < 0.98 * 20.0
    assert state.rate_per_s == pytest.approx(0.98 * 20.0)

    def answer(graph_state: State) -> dict[str, list[str]]:
        return {"answers": [model.invoke(graph_state["question"]).text]}

    builder = StateGraph(State)
    builder.add_node("answer", answer)
    builder.add_edge(START, "answer")
    builder.add_edge("answer", END)
    graph = builder.compile()
    question: State = {"question": "Summarise the design review", "answers": []}
    cold = list(graph.stream(question, stream_mode="messages"))
    warm = list(graph.stream(question, stream_mode="messages"))
    assert len(cold) > 3
    assert all(isinstance(message, AIMessageChunk) for message, _ in cold)
    assert "".join(str(m.content) for m, _ in warm) == "".join(str(m.content) for m, _ in cold)
    assert [c.cached for c in ledger.calls] == [False, False, True]
    assert stats(sim_url)["totals"]["successes"] == 2  # the cache hit never reached the server


def test_batch_over_http_keeps_order_and_counts_what_the_server_served(sim_url: str) -> None:
    settings = load_settings(provider="openai", env="prod_quality")
    prompts = [f"Check item {i} of the release list" for i in range(10)]
    result = create_batch_completions(prompts, max_concurrency=5, settings=settings)
    assert result.summary.succeeded == 10
    served = stats(sim_url)["totals"]
    assert result.summary.input_tokens == served["prompt_tokens"]
    assert result.summary.output_tokens == served["completion_tokens"]
    name = settings.profile.models.standard
    direct = ChatOpenAI(model=name, base_url=sim_url, api_key="k", max_retries=0)  # type: ignore[arg-type]
    for i in (0, 3, 9):
        assert result[i].text == direct.invoke(prompts[i]).text  # type: ignore[union-attr]


async def test_a_429_pauses_every_caller_of_the_provider_until_retry_after() -> None:
    """One request per second: a 429 for one model holds another model's agent too."""
    with run_sim_server(SimServerConfig(rpm=60, tpm=1_000_000)) as url:
        config = BackpressureConfig(
            max_concurrency=1, requests_per_s=100.0, use_limit_headers=False
        )

        def limited(name: str) -> AdaptiveBackpressure:
            chat = ChatOpenAI(model=name, base_url=url, api_key="k", max_retries=0)  # type: ignore[arg-type]
            controller = shared_controller(
                provider="openai", model=name, base_url=url, config=config
            )
            return AdaptiveBackpressure(
                chat, controller=controller, retry=RetryPolicy(attempts=6, base_s=0.01)
            )

        mini, large = limited("gpt-4o-mini"), limited("gpt-4o")
        await mini.ainvoke("first: takes the only token")
        gate = mini.controller.gate
        assert gate is large.controller.gate

        async def other_agent() -> None:
            while gate.remaining() == 0:  # wait until the 429 has paused the provider
                await asyncio.sleep(0.002)
            await large.ainvoke("second agent, other model")

        await asyncio.gather(mini.ainvoke("refused first, then answered"), other_agent())
        totals = stats(url)["totals"]
        assert totals["rate_limited"] >= 1
        assert totals["successes"] == 3
        assert totals["early"] == 0
        assert gate.time_paused() > 0.5
