"""One controller per (provider, base URL, model); a second configuration for it is an error;
and the controller's slot as a context manager."""

from __future__ import annotations

import asyncio

import openai
import pytest

from multiagent.errors import ConfigError
from multiagent.models.adaptive import (
    reset_shared_controllers,
    shared_controller,
    shared_controllers,
)
from multiagent.models.backpressure import BackpressureConfig, BackpressureController
from multiagent.sim.model import rate_limit_error, server_error

FIVE = BackpressureConfig(max_concurrency=5, requests_per_s=8.3)
EIGHT = BackpressureConfig(max_concurrency=8, requests_per_s=83.0)


def test_callers_of_one_key_share_one_controller_and_one_gate_per_endpoint() -> None:
    url = "http://127.0.0.1:9/v1"
    first = shared_controller(provider="openai", model="gpt-4o", base_url=url, config=FIVE)
    again = shared_controller(provider="openai", model="gpt-4o", base_url=url, config=FIVE)
    other_model = shared_controller(provider="openai", model="o3", base_url=url, config=EIGHT)
    other_url = shared_controller(provider="openai", model="gpt-4o", base_url=None, config=EIGHT)
    assert again is first
    assert len({id(c) for c in (first, other_model, other_url)}) == 3
    assert other_model.gate is first.gate  # a 429's pause holds for the whole endpoint
    assert other_url.gate is not first.gate
    assert set(shared_controllers()) == {
        ("openai", "gpt-4o", url),
        ("openai", "o3", url),
        ("openai", "gpt-4o", "default"),
    }


def test_a_second_configuration_for_a_live_key_is_an_error_naming_it() -> None:
    first = shared_controller(provider="sim", model="gpt-4o", base_url=None, config=FIVE)
    with pytest.raises(ConfigError) as caught:
        shared_controller(provider="sim", model="gpt-4o", base_url=None, config=EIGHT)
    message = str(caught.value)
    assert "\n" not in message
    for part in (
        "provider='sim'",
        "base_url='default'",
        "model='gpt-4o'",
        "max_concurrency=5 vs 8",
        "requests_per_s=8.3 vs 83.0",
        "reset_shared_controllers()",
    ):
        assert part in message
    assert "min_concurrency" not in message  # only the fields that differ
    # the first caller's controller is untouched, and a reset allows the new configuration
    assert shared_controller(provider="sim", model="gpt-4o", base_url=None, config=FIVE) is first
    reset_shared_controllers()
    second = shared_controller(provider="sim", model="gpt-4o", base_url=None, config=EIGHT)
    assert second.config == EIGHT
    assert second.state().limit == 8


def test_a_slot_records_an_answer_an_escaping_error_or_nothing() -> None:
    ctl = BackpressureController(BackpressureConfig(requests_per_s=1e6))
    with ctl.slot(tokens=10) as passage:
        assert ctl.state().in_flight == 1
        passage.answered(headers={"x-ratelimit-limit-requests": "600"})
        passage.failed(RuntimeError("a second report is ignored"))
    assert ctl.state().advertised_requests_per_s == 10.0
    with pytest.raises(openai.InternalServerError), ctl.slot():
        raise server_error()
    with ctl.slot():
        pass  # left without a report: no verdict
    state = ctl.state()
    assert (state.in_flight, state.queued, state.samples, state.error_rate) == (0, 0, 2, 0.5)


async def test_the_async_slot_leaves_the_same_way() -> None:
    ctl = BackpressureController(BackpressureConfig(max_concurrency=1, requests_per_s=1e6))
    async with ctl.aslot(tokens=10) as passage:
        passage.answered()
    with pytest.raises(openai.InternalServerError):
        async with ctl.aslot():
            raise server_error()

    async def hold_forever() -> None:
        async with ctl.aslot():
            await asyncio.Event().wait()

    task = asyncio.create_task(hold_forever())
    while ctl.state().in_flight == 0:
        await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    state = ctl.state()
    assert (state.in_flight, state.queued, state.samples, state.error_rate) == (0, 0, 2, 0.5)


def test_a_429_seen_by_one_model_holds_back_the_other_models_of_its_endpoint() -> None:
    url = "http://127.0.0.1:9/v1"
    config = BackpressureConfig(requests_per_s=1e6, use_limit_headers=False)
    mini = shared_controller(provider="openai", model="gpt-4o-mini", base_url=url, config=config)
    large = shared_controller(provider="openai", model="gpt-4o", base_url=url, config=config)
    elsewhere = shared_controller(provider="openai", model="gpt-4o", base_url=None, config=config)
    refused = mini.request(tokens=10)
    assert mini.poll(refused) == 0
    mini.release(refused, error=rate_limit_error(30.0))  # Retry-After: 30 s
    held = large.request(tokens=10)
    wait = large.poll(held)
    assert 0 < wait <= 30.0  # the other model waits out the pause it never saw
    assert large.state().in_flight == 0
    assert large.state().paused_for_s > 0
    free = elsewhere.request(tokens=10)
    assert elsewhere.poll(free) == 0  # another endpoint is not paused
    for controller, ticket in ((large, held), (elsewhere, free)):
        controller.cancel(ticket)


def test_a_pipeline_with_other_limits_for_a_live_key_is_refused_when_built() -> None:
    from multiagent.models.pipeline import ModelPipeline
    from multiagent.policies import load_settings

    first = ModelPipeline(load_settings())
    first.model_for("fast", agent="researcher")  # its controller now limits the fast model
    ModelPipeline(load_settings())  # the same limits: shared
    other = load_settings(overrides={"rate_limit.max_concurrency": 2})
    # named where the second profile is set up (a notebook comparing two), not at a call
    # deep inside a running graph
    with pytest.raises(ConfigError, match=r"max_concurrency=\d+ vs 2"):
        ModelPipeline(other)
    reset_shared_controllers()
    ModelPipeline(other)
