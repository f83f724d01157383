"""Cross-validation: validators fanned out with ``Send``, a deferred aggregator decides.

``START → validate × (distinct texts × validators) → aggregate (deferred)``. One run validates
one item or a whole batch; ``max_concurrency`` at the top level of the run config bounds how many
validators call the model at once.
"""

from __future__ import annotations

from langgraph.graph import END, START, StateGraph

from multiagent.graphs.redacting import WorkflowGraph
from multiagent.nodes.context import AnyContext
from multiagent.nodes.run_context import RunContext
from multiagent.nodes.state import ValidationInput, ValidationState, ValidatorTask
from multiagent.nodes.validator import aggregate, fan_out_validators, validate


def build_validation_graph() -> StateGraph[
    ValidationState, AnyContext, ValidationInput, ValidationState
]:
    """Return the uncompiled cross-validation graph.

    Input: ``{"items": [{"id": str, "text": str}]}`` (or plain texts), optionally with
    ``"validators": [agent names]`` and ``"threshold": float``. Each item's consensus is in
    ``results``; every verdict in ``verdicts``; validators that failed after retries in
    ``failures``.
    """
    graph: StateGraph[ValidationState, AnyContext, ValidationInput, ValidationState]
    graph = WorkflowGraph(ValidationState, context_schema=RunContext, input_schema=ValidationInput)
    graph.add_node("validate", validate, input_schema=ValidatorTask)
    graph.add_node("aggregate", aggregate, defer=True)
    graph.add_conditional_edges(START, fan_out_validators, ["validate"])
    graph.add_edge("validate", "aggregate")
    graph.add_edge("aggregate", END)
    return graph
