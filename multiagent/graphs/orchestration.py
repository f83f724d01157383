"""Orchestration: a planner splits the task, agents work on it in parallel, a synthesizer combines.

``plan → [review] → work × N (Send fan-out) → synthesize``. With ``require_approval`` in the
input, the run pauses after planning for a human (``interrupt()``) and continues with
``Command(resume=...)``; a rejected plan ends the run. Compile with a checkpointer for that and
for resuming an interrupted or failed run.
"""

from __future__ import annotations

from langgraph.graph import END, START, StateGraph

from multiagent.graphs.redacting import WorkflowGraph
from multiagent.nodes.context import AnyContext
from multiagent.nodes.planner import plan, review, route_after_plan, route_after_review
from multiagent.nodes.run_context import RunContext
from multiagent.nodes.state import AgentTask, OrchestrationInput, OrchestrationState
from multiagent.nodes.synthesizer import synthesize
from multiagent.nodes.worker import work


def build_orchestration_graph() -> StateGraph[
    OrchestrationState, AnyContext, OrchestrationInput, OrchestrationState
]:
    """Return the uncompiled orchestration graph.

    Input: ``{"task": str}``, optionally with ``"team": [agent names]``, ``"planner_picks":
    bool`` and ``"require_approval": bool``. Run it with ``context=`` a
    :class:`~multiagent.nodes.context.WorkflowContext` or the plain values of a
    :class:`~multiagent.nodes.run_context.RunContext` (its ``context_schema``). The output is in
    ``output``; each agent's part in ``contributions``; what each node used in ``usage``.
    """
    graph: StateGraph[OrchestrationState, AnyContext, OrchestrationInput, OrchestrationState] = (
        WorkflowGraph(
            OrchestrationState, context_schema=RunContext, input_schema=OrchestrationInput
        )
    )
    graph.add_node("plan", plan)
    graph.add_node("review", review)
    graph.add_node("work", work, input_schema=AgentTask)
    graph.add_node("synthesize", synthesize)
    graph.add_edge(START, "plan")
    graph.add_conditional_edges("plan", route_after_plan, ["review", "work"])
    graph.add_conditional_edges("review", route_after_review, ["work", END])
    graph.add_edge("work", "synthesize")
    graph.add_edge("synthesize", END)
    return graph
