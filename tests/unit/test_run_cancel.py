"""A run its caller gives up stops its nodes: a cancelled ``ainvoke`` and a ``stream`` closed
early end the model calls still running on LangGraph's threads (no wait for them, no payment
for answers nobody reads), and other runs of the process go on."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from multiagent._interrupt import check_stop, run_cancelled
from multiagent.graphs.inputs import orchestration_input, validation_input
from multiagent.graphs.workflows import compile_workflow
from multiagent.models.pipeline import ModelPipeline
from multiagent.nodes.agents_file import load_agents
from multiagent.nodes.context import WorkflowContext, build_context
from multiagent.policies import Settings, load_settings
from tests._recorded import recorded_calls

#: The simulated provider's wait before answering: a call that is not stopped is still waiting
#: when its test has given up on it (and the process's exit still comes, a little later).
FOREVER_S = 120.0
#: The only clock: how long a stopped call may take to notice (it looks every 50 ms).
PATIENCE_S = 30.0


def _settings(ttft_s: float) -> Settings:
    return load_settings(overrides={"sim.ttft_s": ttft_s, "sim.token_latency_s": 0.0})


def _context(settings: Settings) -> tuple[WorkflowContext, ModelPipeline]:
    pipeline = ModelPipeline(settings)
    agents = load_agents(settings)
    context = build_context(settings, agents=agents, pipeline=pipeline, analysis_cache=None)
    return context, pipeline


def _in_flight(pipeline: ModelPipeline, context: WorkflowContext, agents: list[str]) -> int:
    """Calls of ``agents`` holding a slot of the pipeline's controllers."""
    models = {pipeline.model_name(context.agents[name].tier) for name in agents}
    return sum(pipeline.controller_for(model).state().in_flight for model in models)


def _within_patience(run: Callable[[], Any]) -> Any:
    """``run()`` on a thread of its own, failing the test if it has not returned in time
    (``asyncio.run`` waits for its executor's threads, a closed stream for its nodes)."""
    outcome: list[Any] = []

    def target() -> None:
        try:
            outcome.append(("ok", run()))
        except BaseException as exc:
            outcome.append(("raised", exc))

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(PATIENCE_S)
    assert outcome, "it waited for the nodes of the run it gave up"
    kind, value = outcome[0]
    if kind == "raised":
        raise value
    return value


def _until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + PATIENCE_S
    while not condition():
        assert time.monotonic() < deadline, "the condition never held"
        time.sleep(0.01)


def test_outside_a_run_nothing_is_cancelled() -> None:
    assert not run_cancelled()
    check_stop()  # no error


def test_a_cancelled_ainvoke_stops_the_model_call_running_on_a_thread() -> None:
    settings = _settings(FOREVER_S)
    context, pipeline = _context(settings)
    controller = pipeline.controller_for(pipeline.model_name(context.agents["planner"].tier))
    graph = compile_workflow("orchestration")
    inputs = orchestration_input(
        "Plan a product launch", agents=context.agents, team=["researcher", "analyst"]
    )

    async def cancel_while_planning() -> None:
        run = asyncio.create_task(graph.ainvoke(inputs, context=context))
        while controller.state().in_flight == 0:  # the planner's call is at the provider
            await asyncio.sleep(0.01)
        run.cancel()
        with pytest.raises(asyncio.CancelledError):
            await run

    _within_patience(lambda: asyncio.run(cancel_while_planning()))
    # the planner's thread ends its call: the slot is given back, the call recorded cancelled
    _until(lambda: controller.state().in_flight == 0 and recorded_calls()["cancelled"] == 1)
    assert recorded_calls()["ok"] == 0


def test_a_stream_closed_early_stops_its_running_nodes_instead_of_waiting_for_them() -> None:
    settings = _settings(FOREVER_S)
    context, pipeline = _context(settings)
    graph = compile_workflow("validation")
    inputs = validation_input(
        ["The launch is on Monday."], settings=settings, agents=context.agents, validators=3
    )
    started: list[Any] = []

    def read_until_a_validator_starts() -> None:
        parts = graph.stream(inputs, context=context, stream_mode="custom")
        for part in parts:
            if part.get("type") == "agent_started":
                started.append(part)
                break  # closes the stream; without the stop its close waits an hour
        parts.close()

    _within_patience(read_until_a_validator_starts)
    assert started
    # closing returned once every validator had stopped: nothing holds a slot, nothing was paid
    assert _in_flight(pipeline, context, inputs["validators"]) == 0
    assert recorded_calls()["ok"] == 0


def test_a_cancelled_run_leaves_other_runs_of_the_process_going() -> None:
    slow, slow_pipeline = _context(_settings(FOREVER_S))
    brief_settings = _settings(0.3)
    brief, brief_pipeline = _context(brief_settings)
    graph = compile_workflow("validation")
    inputs = validation_input(
        ["The launch is on Monday."], settings=brief_settings, agents=brief.agents, validators=3
    )

    def in_flight(pipeline: ModelPipeline, context: WorkflowContext) -> int:
        return _in_flight(pipeline, context, inputs["validators"])

    async def cancel_one_of_two() -> Any:
        given_up = asyncio.create_task(graph.ainvoke(inputs, context=slow))
        going_on = asyncio.create_task(graph.ainvoke(inputs, context=brief))
        while in_flight(slow_pipeline, slow) == 0 or in_flight(brief_pipeline, brief) == 0:
            await asyncio.sleep(0.005)
        given_up.cancel()
        with pytest.raises(asyncio.CancelledError):
            await given_up
        return await going_on

    result = _within_patience(lambda: asyncio.run(cancel_one_of_two()))
    assert result["results"], "the run left going finished"
    _until(lambda: recorded_calls()["cancelled"] >= 1)
    assert recorded_calls()["ok"] == 3  # the brief run's three validators, none of the slow run's


def test_a_graph_given_up_inside_a_node_leaves_the_enclosing_run_going() -> None:
    from langgraph.graph import END, START, StateGraph
    from typing_extensions import TypedDict

    settings = _settings(0.0)
    context, _ = _context(settings)
    inner = compile_workflow("validation")
    inputs = validation_input(
        ["The launch is on Monday."], settings=settings, agents=context.agents, validators=2
    )

    class Outer(TypedDict):
        going_on: bool

    def peek(state: Outer) -> dict[str, bool]:
        for _ in inner.stream(inputs, context=context, stream_mode="custom"):
            break  # the node gives the inner run up, not its own
        return {"going_on": not run_cancelled()}

    outer = StateGraph(Outer)
    outer.add_node("peek", peek)
    outer.add_edge(START, "peek")
    outer.add_edge("peek", END)
    assert outer.compile().invoke({"going_on": False}) == {"going_on": True}
