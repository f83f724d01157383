"""The workflows as LangGraph state graphs; factories return the uncompiled ``StateGraph``.

Names load on first use: ``multiagent run`` imports ``graphs.execute`` and must not pay for
batch validation's modules, nor a batch for the meeting's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from multiagent._lazy import lazy_exports

if TYPE_CHECKING:
    from multiagent.graphs.batch import BatchValidation as BatchValidation
    from multiagent.graphs.batch import batch_cross_validate as batch_cross_validate
    from multiagent.graphs.execute import execute_workflow as execute_workflow
    from multiagent.graphs.meeting import build_meeting_graph as build_meeting_graph
    from multiagent.graphs.orchestration import (
        build_orchestration_graph as build_orchestration_graph,
    )
    from multiagent.graphs.run_events import WorkflowEvent as WorkflowEvent
    from multiagent.graphs.run_outcome import WorkflowOutcome as WorkflowOutcome
    from multiagent.graphs.runner import run_workflow as run_workflow
    from multiagent.graphs.validation import build_validation_graph as build_validation_graph

_EXPORTS: dict[str, str] = {
    "BatchValidation": "multiagent.graphs.batch",
    "WorkflowEvent": "multiagent.graphs.run_events",
    "WorkflowOutcome": "multiagent.graphs.run_outcome",
    "batch_cross_validate": "multiagent.graphs.batch",
    "build_meeting_graph": "multiagent.graphs.meeting",
    "build_orchestration_graph": "multiagent.graphs.orchestration",
    "build_validation_graph": "multiagent.graphs.validation",
    "execute_workflow": "multiagent.graphs.execute",
    "run_workflow": "multiagent.graphs.runner",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
