"""A worker's in-flight bound held around the HTTP exchange, against the simulator server.

The simulator refuses any request beyond its ``max_concurrency`` in flight and counts each
refusal, so a bound that lets one call too many through shows at the server, not in our books.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from langchain_core.messages import HumanMessage

from multiagent.models._bp_wait import Passage
from multiagent.models._in_flight import GatedController, InFlightGate, held_at_gate
from multiagent.models.backpressure import BackpressureConfig, BackpressureController
from multiagent.models.pipeline import ModelPipeline
from multiagent.models.retry import RetryPolicy
from multiagent.policies import load_settings
from multiagent.sim import SimServerConfig, run_sim_server
from tests.integration._openai_sim import openai_sim

BOUND = 2


def stats(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url.removesuffix("/v1") + "/sim/stats", timeout=5) as response:
        return dict(json.loads(response.read()))


@pytest.fixture
def sim_url(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    # 20 ms per call, so callers overlap; at most BOUND in flight, any more refused and counted
    config = SimServerConfig(rpm=1e6, tpm=1e9, max_concurrency=BOUND, ttft_s=0.02)
    with openai_sim(monkeypatch, config) as url:
        yield url


def _pipeline() -> ModelPipeline:
    # no retries: a refused call would fail the test instead of hiding behind a second attempt
    settings = load_settings(provider="openai")
    return ModelPipeline(settings, retry=RetryPolicy(attempts=1), max_in_flight=BOUND)


def _in_threads(caller: Callable[[int], None], count: int) -> None:
    """``caller(n)`` on ``count`` threads at once, each ``n`` its own; back when all are done."""
    threads = [threading.Thread(target=caller, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def _free_places(pipeline: ModelPipeline) -> int:
    gate = pipeline.in_flight
    assert gate is not None
    return sum(gate._free.acquire(blocking=False) for _ in range(gate.limit + 1))


def test_threads_beyond_the_bound_wait_at_the_transport(sim_url: str) -> None:
    pipeline = _pipeline()
    model = pipeline.model_for("fast", agent="validator")
    # the bound is the HTTP client's: the controller's slot is not gated a second time
    assert not isinstance(model.controller, GatedController)  # type: ignore[attr-defined]
    answers: list[str] = []

    def caller(number: int) -> None:
        for turn in range(4):  # each question its own: no answer comes from the cache
            question = f"Is rye baked at {200 + 10 * number + turn} C?"
            answers.append(model.invoke([HumanMessage(content=question)]).text)

    _in_threads(caller, 3 * BOUND)
    served = stats(sim_url)["totals"]
    assert len(answers) == 24
    assert all(answers)
    assert served["successes"] == 24
    assert served["rejected_concurrency"] == 0  # never more than BOUND at the server
    assert pipeline.controller_for(model.model_name)._holders == 0  # type: ignore[attr-defined]
    assert _free_places(pipeline) == BOUND  # every place given back


def test_async_callers_share_the_same_bound(sim_url: str) -> None:
    pipeline = _pipeline()
    model = pipeline.model_for("fast", agent="validator")

    async def main() -> list[Any]:
        asks = [model.ainvoke([HumanMessage(content=f"Check claim {n}")]) for n in range(12)]
        return await asyncio.gather(*asks)

    replies = asyncio.run(main())
    served = stats(sim_url)["totals"]
    assert len(replies) == 12
    assert all(reply.text for reply in replies)
    assert (served["successes"], served["rejected_concurrency"]) == (12, 0)
    assert _free_places(pipeline) == BOUND


def test_a_stream_closed_early_gives_its_place_back(sim_url: str) -> None:
    pipeline = _pipeline()
    model = pipeline.model_for("fast", agent="validator")
    for n in range(BOUND):
        chunks = model.stream([HumanMessage(content=f"Write a long plan for launch {n}")])
        assert next(iter(chunks)) is not None
        chunks.close()  # type: ignore[attr-defined]
    assert _free_places(pipeline) == BOUND
    assert pipeline.controller_for(model.model_name)._holders == 0  # type: ignore[attr-defined]


def test_a_failed_exchange_gives_its_place_back(monkeypatch: pytest.MonkeyPatch) -> None:
    # nothing listens on this port: every request fails to connect
    monkeypatch.setenv("OPENAI_API_KEY", "sim-key")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    pipeline = _pipeline()
    model = pipeline.model_for("fast", agent="validator")
    for _ in range(BOUND):
        with pytest.raises(Exception, match=r"(?i)connect"):
            model.invoke([HumanMessage(content="Is rye baked at 230 C?")])
    assert _free_places(pipeline) == BOUND


def test_time_waited_at_the_gate_moves_the_send_later() -> None:
    controller = BackpressureController(BackpressureConfig(max_concurrency=4, requests_per_s=1e6))
    gate = InFlightGate(1)
    gate.acquire()  # outside a held block: the wait moves nothing
    released: list[float] = []

    def release() -> None:
        released.append(time.perf_counter())
        gate.release()

    # the place comes back half a second on; the send moves by the time the taker waited,
    # counted from when it asked (bounded by our own clock readings, not by the scheduler)
    timer = threading.Timer(0.5, release)
    with Passage(controller, tokens=1) as passage:
        granted = passage.ticket.sent_at
        assert granted is not None
        with held_at_gate(passage):
            timer.start()
            asked = time.perf_counter()
            gate.acquire()  # as a transport sending the request does
            got = time.perf_counter()
        sent = passage.ticket.sent_at
        assert sent is not None
        # the gate counts from just after ``asked`` until just before ``got``, and it cannot
        # have let the taker through before the place came back
        assert sent - granted <= got - asked
        assert sent - granted >= released[0] - asked - 0.05
        assert sent - granted > 0.25
        passage.answered()
    gate.release()


def test_requests_through_the_environments_proxy_pass_the_gate_too(
    sim_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a second simulator stands as the proxy: it serves the absolute-form requests a proxied
    # client sends it, and counts them, so its stats show the route the calls took
    config = SimServerConfig(rpm=1e6, tpm=1e9, max_concurrency=BOUND, ttft_s=0.02)
    with run_sim_server(config) as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.removesuffix("/v1"))
        monkeypatch.setenv("NO_PROXY", "")
        pipeline = _pipeline()
        model = pipeline.model_for("fast", agent="validator")

        def caller(number: int) -> None:
            for turn in range(3):
                model.invoke([HumanMessage(content=f"Is spelt baked at {number}{turn} C?")])

        _in_threads(caller, 3 * BOUND)
        through_proxy = stats(proxy)["totals"]
    assert stats(sim_url)["totals"]["attempts"] == 0  # every call went by the proxy
    assert through_proxy["successes"] == 18
    assert through_proxy["rejected_concurrency"] == 0  # and the proxy's route was bounded
    assert _free_places(pipeline) == BOUND


def test_a_cancelled_async_call_gives_its_place_back(monkeypatch: pytest.MonkeyPatch) -> None:
    # a slow simulator: the calls are cancelled while their requests are at the server
    with openai_sim(monkeypatch, SimServerConfig(rpm=1e6, tpm=1e9, ttft_s=2.0)) as url:
        pipeline = _pipeline()
        model = pipeline.model_for("fast", agent="validator")

        async def main() -> None:
            asks = [
                asyncio.create_task(model.ainvoke([HumanMessage(content=f"Slow claim {n}")]))
                for n in range(2 * BOUND)
            ]
            while stats(url)["in_flight"] < BOUND:  # both places taken, two callers waiting
                await asyncio.sleep(0.01)
            for ask in asks:
                ask.cancel()
            await asyncio.gather(*asks, return_exceptions=True)

        asyncio.run(main())
    assert _free_places(pipeline) == BOUND
    assert pipeline.controller_for(model.model_name)._holders == 0  # type: ignore[attr-defined]
