"""Meetings: participants speak in rounds, a moderator judges each round, a summary closes.

``speak`` (once per participant per round, each seeing the transcript) → ``moderate`` after each
round → another round, or ``summarize`` on consensus or after the last round.
"""

from __future__ import annotations

from langgraph.graph import END, START, StateGraph

from multiagent.graphs.redacting import WorkflowGraph
from multiagent.nodes.context import AnyContext
from multiagent.nodes.meeting import (
    moderate,
    route_after_moderate,
    route_after_speak,
    speak,
    summarize,
)
from multiagent.nodes.run_context import RunContext
from multiagent.nodes.state import MeetingInput, MeetingState


def build_meeting_graph() -> StateGraph[MeetingState, AnyContext, MeetingInput, MeetingState]:
    """Return the uncompiled meeting graph.

    Input: ``{"topic": str}``, optionally with ``"participants": [agent names]`` and
    ``"rounds": int``; context as for the orchestration graph. The summary is in
    ``summary``, the turns in ``transcript``, the moderator's judgements in ``assessments``.
    """
    graph: StateGraph[MeetingState, AnyContext, MeetingInput, MeetingState] = WorkflowGraph(
        MeetingState, context_schema=RunContext, input_schema=MeetingInput
    )
    graph.add_node("speak", speak)
    graph.add_node("moderate", moderate)
    graph.add_node("summarize", summarize)
    graph.add_edge(START, "speak")
    graph.add_conditional_edges("speak", route_after_speak, ["speak", "moderate"])
    graph.add_conditional_edges("moderate", route_after_moderate, ["speak", "summarize"])
    graph.add_edge("summarize", END)
    return graph
