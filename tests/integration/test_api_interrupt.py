"""From Python (a notebook's kernel interrupt is the same SIGINT), a graph run inside
``multiagent.stop_on_ctrl_c()`` stops at its next model call with ``StopRequested``, its finished
steps kept; a real process receives a real SIGINT while a step waits for its first token."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.slow

SCRIPT = textwrap.dedent(
    """
    import sys
    from langgraph.checkpoint.memory import InMemorySaver
    import multiagent

    settings = multiagent.load_settings(overrides={"sim.ttft_s": 30, "sim.token_latency_s": 0})
    graph = multiagent.build_orchestration_graph().compile(checkpointer=InMemorySaver())
    config = {"configurable": {"thread_id": "t-1"}}
    task = {"task": "Plan a launch", "team": ["researcher", "critic"], "planner_picks": False,
            "require_approval": False}
    context = multiagent.build_context(settings)

    def run():
        for mode, data in graph.stream(task, config, context=context,
                                       stream_mode=["tasks"]):
            if "input" in data:
                print("started", data["name"], flush=True)

    try:
        with multiagent.stop_on_ctrl_c():
            run()
    except KeyboardInterrupt as exc:
        print("stopped by", type(exc).__name__, flush=True)
    state = graph.get_state(config)
    print("next", ",".join(state.next), flush=True)
    """
)


def _interrupted() -> tuple[int, str]:
    process = subprocess.Popen(
        [sys.executable, "-c", SCRIPT],
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert process.stdout is not None
    seen: list[str] = []
    for line in process.stdout:
        seen.append(line)
        if line.startswith("started plan"):  # the planner waits 30 s for its first token
            process.send_signal(signal.SIGINT)
            break
    out, err = process.communicate(timeout=120)
    return process.returncode, "".join(seen) + out + err


def test_an_interrupted_graph_stops_at_its_next_model_call_and_can_resume() -> None:
    code, out = _interrupted()
    assert code == 0, out
    assert "stopped by StopRequested" in out  # unguarded: a plain KeyboardInterrupt
    assert "next plan" in out  # nothing finished: the thread resumes at the planner
    assert "Traceback" not in out
