"""The synthesizer combines the agents' contributions into the collaborative output.

It calls ``invoke``; under ``stream_mode="messages"`` its tokens reach the caller as they are
generated (the seed's streamed ``_synthesize_collaborative_output``), and its start and finish
(with cost) reach the ``custom`` stream.
"""

from __future__ import annotations

from langchain_core.messages import HumanMessage, SystemMessage
from langgraph.runtime import Runtime

from multiagent.nodes.calling import AgentCall
from multiagent.nodes.context import AnyContext, context_of
from multiagent.nodes.state import Contribution, OrchestrationState
from multiagent.nodes.stream_events import agent_step

SYNTHESIZER = "synthesizer"


def synthesis_prompt(task: str, contributions: list[Contribution]) -> str:
    """The synthesizer's prompt: the task first, then each contribution under its author."""
    parts = [f"{task}\n\nThe team's contributions:"]
    for item in contributions:
        parts.append(f"\n[{item['agent']} — {item['subtask']}]\n{item['text']}")
    parts.append("\nWrite the collaborative output.")
    return "\n".join(parts)


def synthesize(state: OrchestrationState, *, runtime: Runtime[AnyContext]) -> dict[str, object]:
    """Combine the contributions into one answer."""
    context = context_of(runtime)
    agent = context.agents[SYNTHESIZER]
    call = AgentCall(context, agent, node="synthesize")
    prompt = synthesis_prompt(state["task"], list(state.get("contributions", [])))
    with agent_step("synthesize", agent.name, call.usage):
        output = call.text([SystemMessage(agent.role), HumanMessage(prompt)])
    return {"output": output, "usage": [call.usage()]}
