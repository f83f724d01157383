"""The three workflows by name: their graph factories, how their tasks are labelled, thread ids,
the model calls each makes."""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from langgraph.checkpoint.base import BaseCheckpointSaver, CheckpointTuple
from langgraph.graph import StateGraph
from langgraph.graph.state import CompiledStateGraph

from multiagent.safety import find_pii_in_id

if TYPE_CHECKING:
    from multiagent.nodes.agents_file import AgentCatalog
    from multiagent.policies import Tier

__all__ = [
    "WORKFLOWS",
    "Workflow",
    "builder",
    "compile_workflow",
    "new_thread_id",
    "subject_of",
    "task_label",
    "workflow_calls",
    "workflow_of",
]

Workflow = Literal["orchestration", "meeting", "validation"]
WORKFLOWS: tuple[Workflow, ...] = ("orchestration", "meeting", "validation")


def builder(workflow: Workflow) -> Callable[[], StateGraph[Any, Any, Any, Any]]:
    """``workflow``'s graph factory, imported when asked for: a run loads its own graph's
    nodes only (the meeting's and the validators' cost start-up to every other run)."""
    if workflow == "orchestration":
        from multiagent.graphs.orchestration import build_orchestration_graph

        return build_orchestration_graph
    if workflow == "meeting":
        from multiagent.graphs.meeting import build_meeting_graph

        return build_meeting_graph
    from multiagent.graphs.validation import build_validation_graph

    return build_validation_graph


_THREAD_PREFIX: dict[Workflow, str] = {
    "orchestration": "run",
    "meeting": "meeting",
    "validation": "validate",
}


#: The input key that only each workflow's state holds.
_INPUT_KEY: dict[Workflow, str] = {
    "orchestration": "task",
    "meeting": "topic",
    "validation": "items",
}


def workflow_of(found: CheckpointTuple) -> Workflow | None:
    """The workflow that made a thread, from one of its checkpoints; ``None`` when not ours.

    ``run_workflow`` names it in the checkpoint metadata; a graph compiled and run by hand (a
    notebook's ``build_orchestration_graph().compile(checkpointer=...)``) writes no such
    metadata, so its state's input key tells instead (in the input checkpoint, before the first
    step, the input is still the value of ``__start__``).
    """
    named = (found.metadata or {}).get("workflow")
    if named in WORKFLOWS:
        return named  # type: ignore[no-any-return]
    values = found.checkpoint.get("channel_values", {})
    start = values.get("__start__")
    keys = set(values) | (set(start) if isinstance(start, dict) else set())
    owners = [workflow for workflow, key in _INPUT_KEY.items() if key in keys]
    return owners[0] if len(owners) == 1 else None


def compile_workflow(
    workflow: Workflow, *, checkpointer: BaseCheckpointSaver[Any] | None = None
) -> CompiledStateGraph[Any, Any, Any, Any]:
    """``workflow``'s graph with ``checkpointer``: a copy (``Pregel.copy``, as ``with_config``
    makes) of the graph compiled once per process. A compiled graph holds no run state, and
    compiling costs about 3 ms: a batch's chunks, thousands of short runs and completions of
    stored ones, would otherwise pay it each."""
    return _compiled(workflow).copy({"checkpointer": checkpointer})


@functools.cache
def _compiled(workflow: Workflow) -> CompiledStateGraph[Any, Any, Any, Any]:
    return builder(workflow)().compile(name=workflow)


def new_thread_id(workflow: Workflow) -> str:
    """A fresh thread id such as ``run-3f9c2a61b0``; drawn again when it reads as personal
    data (ten decimal digits make a phone number): a profile that redacts refuses such ids."""
    while True:
        thread = f"{_THREAD_PREFIX[workflow]}-{uuid.uuid4().hex[:10]}"
        if not find_pii_in_id(thread):
            return thread


def task_label(node: str, payload: Any) -> str:
    """A readable name for a running task: ``work · critic``, ``speak · analyst (round 2)``."""
    if not isinstance(payload, dict):
        return node
    if node == "work" and "agent" in payload:
        return f"work · {payload['agent']}"
    if node == "validate" and "validator" in payload:
        return f"validate · {payload['validator']}"
    if node == "speak" and payload.get("participants"):
        turn = int(payload.get("turn", 0))
        participants = payload["participants"]
        if 0 <= turn < len(participants):
            return f"speak · {participants[turn]} (round {payload.get('round', 1)})"
    if node == "moderate":
        return f"moderate (round {payload.get('round', 1)})"
    return node


def subject_of(workflow: Workflow, inputs: dict[str, Any]) -> str:
    """The task, topic or first item of a run, shortened for listings.

    A thread's input is what its caller gave the graph: items as plain texts (the graph takes
    them, from Python, Studio or LangGraph Server), or one the first node refused.
    """
    if workflow == "orchestration":
        text = str(inputs.get("task", ""))
    elif workflow == "meeting":
        text = str(inputs.get("topic", ""))
    else:
        items = inputs.get("items")
        items = items if isinstance(items, list) else []
        first = items[0] if items else ""
        text = str(first.get("text", "") if isinstance(first, dict) else first)
        if len(items) > 1:
            text = f"{len(items)} items: {text}"
    text = " ".join(text.split())
    return text if len(text) <= 80 else text[:79] + "…"


def workflow_calls(workflow: Workflow, agents: AgentCatalog, inputs: Any) -> list[tuple[str, Tier]]:
    """The ``(node, tier)`` calls ``workflow`` makes with ``inputs``: each must fit the budget.

    A resumed run (no ``inputs``) keeps its team in its checkpoint: only the nodes whose agent
    is fixed are checked then.
    """
    given = inputs if isinstance(inputs, dict) else {}
    if workflow == "orchestration":
        from multiagent.nodes.planner import PLANNER
        from multiagent.nodes.synthesizer import SYNTHESIZER

        fixed = [("plan", PLANNER), ("synthesize", SYNTHESIZER)]
        chosen = [("work", name) for name in given.get("team", [])]
    elif workflow == "meeting":
        from multiagent.nodes.meeting import MODERATOR, SECRETARY

        fixed = [("moderate", MODERATOR), ("summarize", SECRETARY)]
        chosen = [("speak", name) for name in given.get("participants", [])]
    else:
        fixed, chosen = [], [("validate", name) for name in given.get("validators", [])]
    return [(node, agents[name].tier) for node, name in (*fixed, *chosen) if name in agents]
