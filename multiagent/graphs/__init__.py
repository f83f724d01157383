"""The workflows as LangGraph state graphs; factories return the uncompiled ``StateGraph``."""

from multiagent.graphs.batch import BatchValidation, batch_cross_validate
from multiagent.graphs.execute import execute_workflow
from multiagent.graphs.meeting import build_meeting_graph
from multiagent.graphs.orchestration import build_orchestration_graph
from multiagent.graphs.runner import WorkflowEvent, WorkflowOutcome, run_workflow
from multiagent.graphs.validation import build_validation_graph

__all__ = [
    "BatchValidation",
    "WorkflowEvent",
    "WorkflowOutcome",
    "batch_cross_validate",
    "build_meeting_graph",
    "build_orchestration_graph",
    "build_validation_graph",
    "execute_workflow",
    "run_workflow",
]
