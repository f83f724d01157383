"""The composition root for LangGraph Studio and LangGraph Server (named in ``langgraph.json``).

Importing this module compiles the three graphs; nothing else in the package compiles at import.
The server brings its own checkpointer and store, and sends each run's ``context`` as plain
values: the graphs' ``context_schema``, :class:`~multiagent.nodes.run_context.RunContext`
(profile, policy, provider, model, budget, memory, agents file; each with a default). The heavy
objects are built from those values once per process (:func:`multiagent.nodes.context.
context_of`); agents remember in the server's store. Minimal inputs suffice: ``{"task": ...}``,
``{"topic": ...}``, ``{"items": [...]}``.

Importing it ties nothing to a data directory and starts no thread: it is imported wherever the
graphs are wanted (drawing them, a notebook). What a serving process adds, its metrics persisted
into the history of its ``MULTIAGENT_HOME`` and its runs traced, is set up by the server's HTTP
app (:mod:`multiagent.graphs.server_app`, ``langgraph.json``'s ``http.app``), in its lifespan.
"""

from __future__ import annotations

from multiagent.graphs.meeting import build_meeting_graph
from multiagent.graphs.orchestration import build_orchestration_graph
from multiagent.graphs.validation import build_validation_graph

orchestration = build_orchestration_graph().compile(name="orchestration")
meeting = build_meeting_graph().compile(name="meeting")
validation = build_validation_graph().compile(name="validation")

__all__ = ["meeting", "orchestration", "validation"]
