"""``AdaptiveBackpressure`` as a Runnable around a chat model: entry points, retries, pauses."""

from __future__ import annotations

import asyncio
import time

import pytest
from langchain_core.messages import AIMessage, AIMessageChunk

from multiagent.models.adaptive import AdaptiveBackpressure
from multiagent.models.backpressure import BackpressureConfig, BackpressureController
from multiagent.models.retry import RetryPolicy
from multiagent.sim.model import SimulatedChatModel

FAST = RetryPolicy(attempts=8, base_s=0.001, cap_s=0.005)


def limited(model: SimulatedChatModel, **config: object) -> AdaptiveBackpressure:
    values: dict[str, object] = {"max_concurrency": 4, "requests_per_s": 1e6}
    values.update(config)
    controller = BackpressureController(BackpressureConfig(**values))  # type: ignore[arg-type]
    return AdaptiveBackpressure(model, controller=controller, retry=FAST)


def test_every_entry_point_answers_like_the_bare_model() -> None:
    bare = SimulatedChatModel(model="gpt-4o-mini")
    wrapped = limited(SimulatedChatModel(model="gpt-4o-mini"))
    prompt = "List the open questions of the design"
    expected = bare.invoke(prompt).text
    assert wrapped.invoke(prompt).text == expected
    assert asyncio.run(wrapped.ainvoke(prompt)).text == expected
    chunks = list(wrapped.stream(prompt))
    assert all(isinstance(c, AIMessageChunk) for c in chunks)
    assert "".join(str(c.content) for c in chunks) == expected

    async def collect() -> str:
        return "".join([str(c.content) async for c in wrapped.astream(prompt)])

    assert asyncio.run(collect()) == expected
    prompts = [f"question {i}" for i in range(6)]
    assert [m.text for m in wrapped.batch(prompts)] == [bare.invoke(p).text for p in prompts]
    answers = asyncio.run(wrapped.abatch(prompts))
    assert [m.text for m in answers] == [bare.invoke(p).text for p in prompts]
    state = wrapped.controller.state()
    assert state.in_flight == 0
    assert state.samples == 1 + 1 + 1 + 1 + 6 + 6


def test_server_errors_are_retried_through_the_controller() -> None:
    flaky = SimulatedChatModel(model="gpt-4o-mini", server_error_rate=0.4, fault_seed=5)
    wrapped = limited(flaky)
    answers = wrapped.batch([f"item {i}" for i in range(10)])
    assert all(isinstance(a, AIMessage) for a in answers)
    state = wrapped.controller.state()
    assert state.samples > 10  # every attempt passed the controller
    assert 0 < state.error_rate < 1


def test_a_429_pauses_the_next_request_for_its_retry_after() -> None:
    throttled = SimulatedChatModel(
        model="gpt-4o-mini", rate_limit_error_rate=0.5, retry_after_s=0.08, fault_seed=2
    )
    wrapped = limited(throttled, max_concurrency=1, use_limit_headers=False)
    started = time.perf_counter()
    for i in range(4):
        wrapped.invoke(f"call {i}")
    state = wrapped.controller.state()
    assert state.time_paused_s >= 0.08
    assert state.rate_cuts >= 1
    assert time.perf_counter() - started >= state.time_paused_s - 0.01


def test_the_concurrency_limit_holds_for_a_batch() -> None:
    slow = SimulatedChatModel(model="gpt-4o-mini", ttft_s=0.05)
    wrapped = limited(slow, max_concurrency=2)
    started = time.perf_counter()
    wrapped.batch([f"slow {i}" for i in range(6)], config={"max_concurrency": 6})
    assert time.perf_counter() - started >= 3 * 0.05 - 0.005  # three rounds of two


def test_bad_input_fails_before_anything_is_sent() -> None:
    wrapped = limited(SimulatedChatModel(model="gpt-4o-mini"))
    with pytest.raises(TypeError):
        wrapped.invoke(12345)  # type: ignore[arg-type]
    state = wrapped.controller.state()
    assert (state.in_flight, state.queued, state.samples) == (0, 0, 0)
