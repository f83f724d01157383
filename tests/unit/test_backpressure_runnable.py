"""``AdaptiveBackpressure`` as a Runnable around a chat model: entry points, retries, pauses."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from langchain_core.messages import AIMessage, AIMessageChunk
from langchain_core.outputs import ChatResult

from multiagent.models.adaptive import AdaptiveBackpressure
from multiagent.models.backpressure import BackpressureConfig, BackpressureController, Ticket
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


class Watched(BackpressureController):
    """A controller that notes, for each send, whether a provider pause was still running."""

    def __init__(self, config: BackpressureConfig) -> None:
        super().__init__(config)
        self.sends_during_pause = self.sends = 0

    def _poll(self, ticket: Ticket) -> float:
        wait = super()._poll(ticket)
        if wait == 0:
            self.sends += 1
            self.sends_during_pause += self.gate.remaining() > 0
        return wait


def test_a_429_pauses_the_next_request_for_its_retry_after() -> None:
    throttled = SimulatedChatModel(
        model="gpt-4o-mini", rate_limit_error_rate=0.5, retry_after_s=0.08, fault_seed=2
    )
    controller = Watched(BackpressureConfig(max_concurrency=1, requests_per_s=1e6))
    wrapped = AdaptiveBackpressure(throttled, controller=controller, retry=FAST)
    answers = [wrapped.invoke(f"call {i}").text for i in range(4)]
    assert answers == [SimulatedChatModel().invoke(f"call {i}").text for i in range(4)]
    state = controller.state()
    assert state.rate_cuts >= 1
    assert controller.gate.pauses >= 1
    assert state.time_paused_s >= 0.08 * controller.gate.pauses - 1e-9  # each pause ran out
    rejected = controller.sends - 4  # every 429 was retried until it was answered
    assert rejected == controller.gate.pauses
    assert controller.sends_during_pause == 0


def test_the_concurrency_limit_holds_for_a_batch() -> None:
    lock = threading.Lock()
    inside: list[int] = [0]
    peaks: list[int] = []
    meet = threading.Barrier(2, timeout=30)  # calls pair up: one at a time never passes

    class Meeting(SimulatedChatModel):
        def _generate(self, *args: Any, **kwargs: Any) -> ChatResult:
            with lock:
                inside[0] += 1
                peaks.append(inside[0])
            try:
                meet.wait()
                return super()._generate(*args, **kwargs)
            finally:
                with lock:
                    inside[0] -= 1

    wrapped = limited(Meeting(model="gpt-4o-mini"), max_concurrency=2)
    answers = wrapped.batch([f"slow {i}" for i in range(6)], config={"max_concurrency": 6})
    assert len(answers) == 6
    assert max(peaks) == 2  # six threads, two slots
    assert wrapped.controller.state().samples == 6


def test_bad_input_fails_before_anything_is_sent() -> None:
    wrapped = limited(SimulatedChatModel(model="gpt-4o-mini"))
    with pytest.raises(TypeError):
        wrapped.invoke(12345)  # type: ignore[arg-type]
    state = wrapped.controller.state()
    assert (state.in_flight, state.queued, state.samples) == (0, 0, 0)
