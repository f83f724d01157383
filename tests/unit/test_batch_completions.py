"""Batch calls: input order, error isolation, summaries, bounded concurrency."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage
from langchain_core.outputs import ChatResult

from multiagent.errors import UsageError
from multiagent.models.adaptive import reset_shared_controllers
from multiagent.models.batch import acreate_batch_completions, create_batch_completions
from multiagent.sim.model import SimulatedChatModel


@pytest.fixture(autouse=True)
def fresh_controllers() -> Iterator[None]:
    reset_shared_controllers()
    yield
    reset_shared_controllers()


PROMPTS = [f"Assess proposal number {i} for risks" for i in range(12)]


def expected(prompt: str) -> str:
    return SimulatedChatModel(model="gpt-4o-mini").invoke(prompt).text


def test_results_come_back_in_input_order_with_a_summary() -> None:
    requests: list[str | list[BaseMessage]] = [*PROMPTS]
    requests.append([SystemMessage("You are a reviewer."), HumanMessage("Review the budget")])
    result = create_batch_completions(requests, max_concurrency=4)
    assert len(result) == len(requests)
    for prompt, item in zip(PROMPTS, result, strict=False):
        assert isinstance(item, BaseMessage)
        assert item.text == expected(prompt)
    summary = result.summary
    assert (summary.requests, summary.succeeded, summary.failed) == (13, 13, 0)
    assert summary.from_cache == 0
    assert summary.input_tokens > 0
    assert summary.output_tokens > 0
    assert summary.cost_usd > 0
    assert summary.max_concurrency == 4

    again = create_batch_completions(PROMPTS[:5], max_concurrency=2)
    assert again.summary.from_cache == 5
    assert again.summary.cost_usd == 0.0


def test_a_failing_item_is_its_own_result_and_does_not_sink_the_batch() -> None:
    flaky = SimulatedChatModel(model="gpt-4o-mini", server_error_rate=0.5, fault_seed=7)
    result = create_batch_completions(PROMPTS, max_concurrency=3, model=flaky)
    failures = [item for item in result if isinstance(item, Exception)]
    assert failures
    assert len(failures) < len(PROMPTS)
    assert all(isinstance(item, openai.InternalServerError) for item in failures)
    for prompt, item in zip(PROMPTS, result, strict=True):
        if isinstance(item, BaseMessage):
            assert item.text == expected(prompt)
    assert result.summary.failed == len(failures)
    assert result.summary.succeeded == len(PROMPTS) - len(failures)


async def test_async_twin_keeps_order_and_isolates_errors() -> None:
    flaky = SimulatedChatModel(model="gpt-4o-mini", server_error_rate=0.5, fault_seed=11)
    result = await acreate_batch_completions(PROMPTS, max_concurrency=5, model=flaky)
    assert len(result) == len(PROMPTS)
    assert 0 < result.summary.failed < len(PROMPTS)
    for prompt, item in zip(PROMPTS, result, strict=True):
        if not isinstance(item, Exception):
            assert item.text == expected(prompt)
    through_pipeline = await acreate_batch_completions(PROMPTS[:4], max_concurrency=2)
    assert [m.text for m in through_pipeline] == [expected(p) for p in PROMPTS[:4]]  # type: ignore[union-attr]


def test_concurrency_is_bounded_and_used() -> None:
    # calls meet in fours at a barrier: fewer than four at a time never get past it, and the
    # count of calls inside shows more than four at a time
    meet = threading.Barrier(4, timeout=30)
    lock = threading.Lock()
    inside: list[int] = [0]
    peaks: list[int] = []

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

    prompts = [f"question {i}" for i in range(8)]
    result = create_batch_completions(
        prompts, max_concurrency=4, model=Meeting(model="gpt-4o-mini")
    )
    assert result.summary.succeeded == 8
    assert [m.text for m in result] == [expected(p) for p in prompts]  # type: ignore[union-attr]
    assert max(peaks) == 4


def test_bad_requests_are_usage_errors() -> None:
    with pytest.raises(UsageError, match="request 1"):
        create_batch_completions(["fine", ""])
    with pytest.raises(UsageError, match="not one string"):
        create_batch_completions("just one prompt")  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="max_concurrency=0"):
        create_batch_completions(["fine"], max_concurrency=0)
    # a float ran with a fractional pool size and True as 1 thread
    for value in (2.5, True):
        with pytest.raises(UsageError, match=f"max_concurrency={value!r} is not a whole number"):
            create_batch_completions(["fine"], max_concurrency=value)  # type: ignore[arg-type]
