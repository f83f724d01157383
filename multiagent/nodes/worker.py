"""An agent's turn: recall what it remembers, answer with its role, remember what it learned.

Used by the orchestration fan-out (each agent works on its part of the task) and by meetings
(each participant speaks in turn, seeing the transcript so far).
"""

from __future__ import annotations

from langchain_core.messages import HumanMessage, SystemMessage
from langgraph.config import get_config
from langgraph.runtime import Runtime

from multiagent.nodes.agents import AgentSpec
from multiagent.nodes.calling import AgentCall
from multiagent.nodes.context import AnyContext, WorkflowContext, context_of
from multiagent.nodes.state import AgentTask, Contribution
from multiagent.nodes.stream_events import agent_step
from multiagent.nodes.usage import Usage

#: How many remembered notes an agent reads before acting.
RECALL_K = 3


def recall_notes(context: WorkflowContext, agent: AgentSpec, query: str) -> str:
    """Return the agent's relevant notes as a prompt section, or ``""``."""
    if context.memory is None or not agent.memory:
        return ""
    notes = context.memory.recall(agent.name, query, k=RECALL_K)
    if not notes:
        return ""
    listed = "\n".join(f"- {' '.join(note.split())[:400]}" for note in notes)
    return f"\n\nYour notes from earlier work:\n{listed}"


def remember(
    context: WorkflowContext, agent: AgentSpec, *, query: str, answer: str, workflow: str
) -> None:
    """Store what the agent answered, so a later run can recall it."""
    if context.memory is None or not agent.memory or not answer.strip():
        return
    thread = str(get_config().get("configurable", {}).get("thread_id", ""))
    context.memory.remember(
        agent.name,
        [f"{query.strip()[:300]}\n{answer.strip()}"],
        metadata={"workflow": workflow, "thread_id": thread},
    )


def agent_answer(
    context: WorkflowContext, agent: AgentSpec, *, node: str, prompt: str, workflow: str
) -> tuple[str, Usage]:
    """Run one turn of ``agent`` on ``prompt``; return its answer and the node's usage.

    The prompt's first line should be the task itself: a reader (and the simulated provider)
    takes the subject from there.
    """
    call = AgentCall(context, agent, node=node)
    with agent_step(node, agent.name, call.usage):
        messages = [
            SystemMessage(agent.role),
            HumanMessage(prompt + recall_notes(context, agent, prompt)),
        ]
        answer = call.text(messages)
        remember(context, agent, query=prompt, answer=answer, workflow=workflow)
    return answer, call.usage()


def work(state: AgentTask, *, runtime: Runtime[AnyContext]) -> dict[str, object]:
    """Orchestration fan-out target: one agent does its part of the task."""
    context = context_of(runtime)
    agent = context.agents[state["agent"]]
    prompt = f"{state['task']}\n\nYour part of this task: {state['subtask']}"
    answer, usage = agent_answer(
        context, agent, node="work", prompt=prompt, workflow="orchestration"
    )
    contribution = Contribution(agent=agent.name, subtask=state["subtask"], text=answer)
    return {"contributions": [contribution], "usage": [usage]}
