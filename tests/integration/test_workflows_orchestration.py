"""Orchestration end to end on the simulated model, with the real SQLite checkpointer.

Streaming order, human approval, budget stop and resume, resume after a provider fault, and
agent memory (real Chroma) are each exercised through the same runner the CLI uses.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import BaseMessage
from langgraph.checkpoint.base import BaseCheckpointSaver

from multiagent.graphs.inputs import orchestration_input
from multiagent.graphs.run_events import WorkflowEvent
from multiagent.graphs.run_outcome import WorkflowOutcome
from multiagent.graphs.runner import run_workflow
from multiagent.graphs.workflows import compile_workflow
from multiagent.models.pipeline import ModelPipeline
from multiagent.nodes.agents_file import load_agents
from multiagent.nodes.context import build_context
from multiagent.persistence.checkpointer import open_checkpointer
from multiagent.policies import Settings, load_settings
from multiagent.sim.model import SimulatedChatModel

TASK = "Plan a product launch for a small bakery"
TEAM = ["researcher", "analyst", "critic"]


class FailingAgentsPipeline(ModelPipeline):
    """The real pipeline, except that the named agents get a provider that always answers 500."""

    def __init__(self, settings: Settings, *, failing: set[str]) -> None:
        super().__init__(settings)
        self.failing = failing

    def model_for(self, tier: Any, *, agent: str, **kwargs: Any) -> Any:
        if agent in self.failing:
            return SimulatedChatModel(model="gpt-4o-mini", server_error_rate=1.0)
        return super().model_for(tier, agent=agent, **kwargs)


@contextmanager
def saver(settings: Settings) -> Iterator[BaseCheckpointSaver[Any]]:
    with open_checkpointer(settings) as checkpointer:
        yield checkpointer


def _run(
    settings: Settings,
    checkpointer: BaseCheckpointSaver[Any],
    *,
    thread: str,
    team: list[str] | None = TEAM,
    resume: bool = False,
    approval: bool = False,
    **kwargs: Any,
) -> WorkflowOutcome:
    pipeline = kwargs.pop("pipeline", None)
    budget = kwargs.pop("budget_usd", None)
    agents = load_agents(settings)
    inputs = orchestration_input(TASK, agents=agents, team=team, require_approval=approval)
    context = build_context(settings, agents=agents, pipeline=pipeline, budget_usd=budget)
    return run_workflow(
        "orchestration",
        None if resume else inputs,
        context=context,
        checkpointer=checkpointer,
        thread_id=thread,
        resume=resume,
        **kwargs,
    )


def _nodes_run(outcome: WorkflowOutcome) -> list[str]:
    """The agents whose calls were sent or answered from the cache (a call stopped before it
    was sent is a cancelled record of its own)."""
    calls = outcome.ledger.calls
    return sorted(c.agent for c in calls if c.outcome != "cancelled" or c.attempts)


def test_plan_fan_out_synthesize() -> None:
    settings = load_settings()
    with saver(settings) as checkpointer:
        outcome = _run(settings, checkpointer, thread="t-basic")
    values = outcome.values
    assert outcome.status == "completed"
    assert [step["agent"] for step in values["plan"]] == TEAM
    assert sorted(c["agent"] for c in values["contributions"]) == sorted(TEAM)
    assert values["output"].startswith(("Collaborative output", "Combined answer"))
    assert "small bakery" in values["output"]
    nodes = sorted(entry["node"] for entry in values["usage"])
    assert nodes == ["plan", "synthesize", "work", "work", "work"]
    assert all(entry["calls"] == 1 and entry["input_tokens"] > 0 for entry in values["usage"])
    assert outcome.ledger.totals()["calls"] == 5
    assert _nodes_run(outcome) == sorted(["planner", "synthesizer", *TEAM])


def test_planner_picks_from_the_default_team() -> None:
    settings = load_settings()
    with saver(settings) as checkpointer:
        outcome = _run(settings, checkpointer, thread="t-pick", team=None)
    picked = [step["agent"] for step in outcome.values["plan"]]
    assert 2 <= len(picked) <= 4
    assert set(picked) <= {"researcher", "analyst", "critic", "writer"}
    assert sorted(c["agent"] for c in outcome.values["contributions"]) == sorted(picked)


def test_every_agent_streams_and_the_synthesis_streams_while_it_runs() -> None:
    settings = load_settings(overrides={"sim.token_latency_s": 0.002})
    events: list[WorkflowEvent] = []
    with saver(settings) as checkpointer:
        outcome = _run(settings, checkpointer, thread="t-stream", on_event=events.append)
    # each agent's tokens, told apart by task, join to its contribution
    streamed: dict[str, str] = {}
    for e in events:
        if e.kind == "token" and e.node == "work":
            streamed[e.task] = streamed.get(e.task, "") + e.text
    contributions = {c["agent"]: c["text"] for c in outcome.values["contributions"]}
    assert sorted(streamed.values()) == sorted(contributions.values())
    named = {e.agent for e in events if e.kind == "token" and e.node == "work"}
    assert named == set(contributions) == set(TEAM)
    # each agent's cost reaches the custom stream, equal to its usage entry
    finished = {
        (e.data or {})["agent"]: (e.data or {})["cost_usd"]
        for e in events
        if e.kind == "custom" and (e.data or {}).get("type") == "agent_finished"
    }
    usage = {u["agent"]: u["cost_usd"] for u in outcome.values["usage"]}
    # the planner reports its work like every other agent
    assert set(finished) == {"planner", *TEAM, "synthesizer"}
    assert all(finished[name] == usage[name] > 0 for name in finished)
    # the synthesis tokens arrive one by one, all while the synthesizer runs
    kinds = [(e.kind, e.node) for e in events]
    start = kinds.index(("start", "synthesize"))
    end = kinds.index(("end", "synthesize"))
    tokens = [i for i, e in enumerate(events) if e.kind == "token" and e.node == "synthesize"]
    assert start < tokens[0]
    assert tokens[-1] < end
    assert len(tokens) > 1
    assert {events[i].agent for i in tokens} == {"synthesizer"}
    assert "".join(events[i].text for i in tokens) == outcome.values["output"]


def test_approval_interrupt_then_resume() -> None:
    settings = load_settings()
    with saver(settings) as checkpointer:
        waiting = _run(settings, checkpointer, thread="t-approve", approval=True)
        assert waiting.status == "awaiting_approval"
        assert waiting.interrupt is not None
        assert waiting.interrupt["kind"] == "plan_approval"
        assert [s["agent"] for s in waiting.interrupt["plan"]] == TEAM
        assert waiting.values["contributions"] == []
        seen: list[dict[str, Any]] = []

        def approver(payload: dict[str, Any]) -> Any:
            seen.append(payload)
            return {"approved": True, "feedback": "keep it under a page"}

        done = _run(settings, checkpointer, thread="t-approve", resume=True, approver=approver)
    assert done.status == "completed"
    assert len(seen) == 1
    assert done.values["approval"] == {"approved": True, "feedback": "keep it under a page"}
    assert all("keep it under a page" in c["subtask"] for c in done.values["contributions"])
    assert _nodes_run(done) == sorted(["synthesizer", *TEAM])  # the planner did not run again


def test_rejected_plan_ends_without_work() -> None:
    settings = load_settings()
    with saver(settings) as checkpointer:
        outcome = _run(
            settings, checkpointer, thread="t-reject", approval=True, approver=lambda _: False
        )
    assert outcome.status == "rejected"
    assert outcome.values["contributions"] == []
    assert "output" not in outcome.values
    assert _nodes_run(outcome) == ["planner"]


def test_budget_stop_keeps_partial_results_and_resumes_with_a_larger_budget() -> None:
    # the synthesizer's tier costs $1000 per million tokens: planner and agents fit, it does not
    settings = load_settings(
        overrides={
            "models.premium": "gpt-4o",
            "prices.gpt-4o": {"input_per_mtok": 1000.0, "output_per_mtok": 1000.0},
        }
    )
    with saver(settings) as checkpointer:
        stopped = _run(settings, checkpointer, thread="t-budget", budget_usd=0.05)
        assert stopped.status == "budget_exceeded"
        assert "budget of $0.05 reached" in stopped.message
        assert sorted(c["agent"] for c in stopped.values["contributions"]) == sorted(TEAM)
        assert "output" not in stopped.values
        assert "synthesizer" not in _nodes_run(stopped)  # refused before the call
        assert stopped.ledger.spent_usd <= 0.05
        again = _run(settings, checkpointer, thread="t-budget", resume=True, budget_usd=0.05)
        assert again.status == "budget_exceeded"
        assert _nodes_run(again) == []
        done = _run(settings, checkpointer, thread="t-budget", resume=True, budget_usd=5.0)
    assert done.status == "completed"
    assert _nodes_run(done) == ["synthesizer"]
    assert done.spent_before_usd > 0
    assert done.ledger.budget_usd is not None
    assert done.ledger.budget_usd < 5.0  # what the thread had spent counts against its budget
    assert done.values["output"]


def test_resume_after_a_provider_fault_reruns_nothing_completed() -> None:
    settings = load_settings()
    with saver(settings) as checkpointer:
        pipeline = FailingAgentsPipeline(settings, failing={"critic"})
        failed = _run(settings, checkpointer, thread="t-fault", pipeline=pipeline)
        assert failed.status == "failed"
        assert "InternalServerError" in (failed.error or "")
        assert sorted(c["agent"] for c in failed.values["contributions"]) == [
            "analyst",
            "researcher",
        ]
        resumed = _run(settings, checkpointer, thread="t-fault", resume=True)
        graph = compile_workflow("orchestration", checkpointer=checkpointer)
        history = list(graph.get_state_history({"configurable": {"thread_id": "t-fault"}}))
    assert resumed.status == "completed"
    assert _nodes_run(resumed) == ["critic", "synthesizer"]
    assert sorted(c["agent"] for c in resumed.values["contributions"]) == sorted(TEAM)
    nodes = sorted(e["node"] + ":" + e["agent"] for e in resumed.values["usage"])
    assert nodes == sorted(["plan:planner", "synthesize:synthesizer"] + [f"work:{a}" for a in TEAM])
    assert len(history) >= 4


class PromptRecorder(BaseCallbackHandler):
    def __init__(self) -> None:
        self.prompts: list[str] = []

    def on_chat_model_start(
        self, serialized: dict[str, Any], messages: list[list[BaseMessage]], **kwargs: Any
    ) -> None:
        self.prompts.extend(m.text for batch in messages for m in batch if m.type == "human")


def test_agents_recall_before_acting_and_remember_after() -> None:
    from multiagent.persistence.memory import open_agent_memory

    settings = load_settings()
    graph = compile_workflow("orchestration")
    with open_agent_memory(settings, embeddings="lexical") as memory:
        agents = load_agents(settings)
        inputs = orchestration_input(TASK, agents=agents, team=["critic"])
        first = build_context(settings, agents=agents, memory=memory)
        graph.invoke(inputs, context=first)
        assert memory.recall("critic", TASK, k=3)  # the critic wrote what it did
        assert memory.recall("planner", TASK, k=3) == []  # the planner keeps no memory
        recorder = PromptRecorder()
        again = build_context(settings, agents=agents, memory=memory)
        graph.invoke(
            {**inputs, "task": TASK + " next spring"},
            {"callbacks": [recorder]},
            context=again,
        )
    critic_prompts = [p for p in recorder.prompts if "Your part of this task" in p]
    assert critic_prompts
    assert "Your notes from earlier work" in critic_prompts[0]
    assert TASK in critic_prompts[0].split("Your notes from earlier work", 1)[1]
