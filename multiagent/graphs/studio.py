"""The composition root for LangGraph Studio and LangGraph Server (named in ``langgraph.json``).

Importing this module compiles the three graphs; nothing else in the package compiles at import.
The server brings its own checkpointer and store. A run started without a ``context`` uses the
process defaults (settings loaded once, the built-in and ``agents.toml`` agents, the profile's
budget per node call): see :func:`multiagent.nodes.context.context_of`.
"""

from __future__ import annotations

from multiagent.graphs.meeting import build_meeting_graph
from multiagent.graphs.orchestration import build_orchestration_graph
from multiagent.graphs.validation import build_validation_graph

orchestration = build_orchestration_graph().compile(name="orchestration")
meeting = build_meeting_graph().compile(name="meeting")
validation = build_validation_graph().compile(name="validation")

__all__ = ["meeting", "orchestration", "validation"]
