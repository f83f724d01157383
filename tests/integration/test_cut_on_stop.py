"""The second Ctrl-C cuts a whole answer the ``openai`` provider's direct line (its urllib3
pool) is waiting for: the call raises ``StopRequested`` at once rather than when the server
answers. A real SIGINT, twice, lands in this process while a worker thread waits; the CLI's
streams are cut the same way (``test_cli_interrupt.py``). A run given up by its caller cuts
its own calls waiting at the server, and only those."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from typing import Any

import httpx2
import pytest

from multiagent._interrupt import StopRequested, stop_on_ctrl_c
from multiagent.graphs.inputs import validation_input
from multiagent.graphs.workflows import compile_workflow
from multiagent.models._openai_direct import DirectLine
from multiagent.models.factory import build_chat_model
from multiagent.models.pipeline import ModelPipeline
from multiagent.nodes.agents_file import load_agents
from multiagent.nodes.context import build_context
from multiagent.policies import load_settings
from multiagent.sim import SimServerConfig
from tests._recorded import recorded_calls
from tests.integration._openai_sim import openai_sim


def test_the_second_ctrl_c_cuts_a_whole_answer_the_direct_line_waits_for(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MULTIAGENT_RATE_LIMIT__REQUEST_TIMEOUT_S", "1200")  # no timeout first
    with openai_sim(monkeypatch, SimServerConfig(rpm=1e6, tpm=1e9, ttft_s=600.0)) as url:
        model = build_chat_model("standard", load_settings(provider="openai"))
        assert isinstance(model.client.line, DirectLine)
        ended: list[BaseException] = []

        def call() -> None:
            try:
                model.invoke("Plan a launch")
            except BaseException as exc:  # what ended the call is the result
                ended.append(exc)

        worker = threading.Thread(target=call, daemon=True)
        stats = url.removesuffix("/v1") + "/sim/stats"
        with stop_on_ctrl_c():  # the stop holds until the block ends, as around a run
            worker.start()
            while httpx2.get(stats).json()["in_flight"] < 1:  # the call is at the server
                time.sleep(0.01)
            os.kill(os.getpid(), signal.SIGINT)  # asks to stop: the answer may finish
            with pytest.raises(KeyboardInterrupt):
                os.kill(os.getpid(), signal.SIGINT)  # stops now: raises here, cuts the call
            worker.join(timeout=120)
            assert not worker.is_alive()
    assert [type(exc) for exc in ended] == [StopRequested]


def test_a_run_given_up_cuts_its_calls_waiting_for_a_first_token_and_no_other_run_s(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A cancelled ``ainvoke`` (LangGraph Server's way of giving a run up) ends at once although
    its validators' calls still wait at the server (``asyncio.run`` waits for the thread that
    makes it); the call is recorded cancelled, and the other run's calls are still at
    the server afterwards."""
    monkeypatch.setenv("MULTIAGENT_RATE_LIMIT__REQUEST_TIMEOUT_S", "1200")  # no timeout first
    with openai_sim(monkeypatch, SimServerConfig(rpm=1e6, tpm=1e9, ttft_s=600.0)):
        settings = load_settings(provider="openai")
        agents = load_agents(settings)
        pipeline = ModelPipeline(settings)
        context = build_context(settings, agents=agents, pipeline=pipeline, analysis_cache=None)
        graph = compile_workflow("validation")
        inputs = validation_input(
            ["The launch is on Monday."], settings=settings, agents=agents, validators=2
        )
        model = pipeline.model_name(agents[inputs["validators"][0]].tier)

        def at_server() -> int:
            """Calls holding a slot of the validators' controller (both runs share it)."""
            return pipeline.controller_for(model).state().in_flight

        async def give_up_one_of_two() -> None:
            given_up = asyncio.create_task(graph.ainvoke(inputs, context=context))
            while at_server() < 2:  # its two validators' calls
                await asyncio.sleep(0.01)
            going_on = asyncio.create_task(graph.ainvoke(inputs, context=context))
            while at_server() < 4:
                await asyncio.sleep(0.01)
            given_up.cancel()
            with pytest.raises(asyncio.CancelledError):
                await given_up
            while at_server() > 2 or recorded_calls()["cancelled"] < 2:  # the cut calls end
                await asyncio.sleep(0.01)
            assert at_server() == 2, "the other run's calls were cut too"
            going_on.cancel()
            with pytest.raises(asyncio.CancelledError):
                await going_on

        ended: list[Any] = []

        def run() -> None:
            try:
                ended.append(asyncio.run(give_up_one_of_two()))
            except BaseException as exc:  # the test's verdict, raised below
                ended.append(exc)

        runner = threading.Thread(target=run, daemon=True)
        runner.start()
        runner.join(timeout=120)  # not cut, the calls wait 600 s for their first token
        assert not runner.is_alive(), "a given-up run waited for its call at the server"
        if isinstance(ended[0], BaseException):
            raise ended[0]
    calls = recorded_calls()
    assert (calls["cancelled"], calls["error"], calls["ok"]) == (4, 0, 0)
