"""LangGraph Server's checks of what a request brings, before the server stores anything.

:mod:`multiagent.graphs.server_auth`'s handlers call these: the server stores a run and its
input's first checkpoint before any node runs, an assistant's or a cron's context and a cron's
input for runs that start later, so a value a run would fail on is refused when it is given,
with 422 and one line naming it and the valid ones.

- :func:`check_context`: a run context (``context_schema``,
  :class:`~multiagent.nodes.run_context.RunContext`): the server drops the keys the schema does
  not name, with a log line only, so a misspelt key would run silently with the profile's
  value.
- :func:`check_run_input`: a run's (or a cron's) input, by the check its workflow's first node
  makes (:func:`~multiagent.nodes.input_defaults.check_task`, ``check_meeting``,
  ``check_items``: one validator for both places) with the agents and profile of the run's
  context, and the keys of its input schema; a command's ``update`` against the state schema
  (:mod:`multiagent.graphs.state_updates`) and its ``goto`` against the graph's nodes.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any, cast

from langgraph.graph import END, StateGraph
from langgraph_sdk import Auth, get_client
from langgraph_sdk.errors import NotFoundError, UnprocessableEntityError
from pydantic import ValidationError

from multiagent.errors import UsageError
from multiagent.graphs.state_updates import check_state_update, state_keys
from multiagent.graphs.workflows import WORKFLOWS, Workflow, builder
from multiagent.nodes.context import resolve_context
from multiagent.nodes.input_defaults import check_items, check_meeting, check_task, validators_of
from multiagent.nodes.run_context import RunContext
from multiagent.nodes.state import ValidationState

__all__ = ["check_context", "check_run_input"]


async def check_run_input(
    assistant_id: Any, context: Any, kwargs: dict[str, Any], command: dict[str, Any]
) -> None:
    """Raise 422 with one line for a run's input that its workflow would refuse at its first
    node, or a command's ``update`` its state schema does not allow or ``goto`` no node of its
    graph (see the module)."""
    found = await _assistant(str(assistant_id))
    if found is None:
        return  # the server answers 404 for an unknown assistant itself
    workflow, stored = found
    # the run's context: the assistant's, with the run's values over it (as the server merges
    # them); without a context of the caller's, the server's keys of the config are in it
    given = {k: v for k, v in (context or {}).items() if k in RunContext.model_fields}
    try:
        if command:
            _check_command(workflow, command)
        else:
            await asyncio.to_thread(_check_input, workflow, kwargs["input"], {**stored, **given})
    except UsageError as exc:
        raise Auth.exceptions.HTTPException(status_code=422, detail=str(exc)) from None


async def _assistant(assistant_id: str) -> tuple[Workflow, dict[str, Any]] | None:
    """The workflow and the stored context of assistant ``assistant_id`` (``None`` when there
    is no such assistant, or its graph is none of the workflows)."""
    if assistant_id in WORKFLOWS:  # a cron names its graph (a run, the graph's assistant)
        return assistant_id, {}
    async with get_client() as client:
        try:
            assistant = await client.assistants.get(assistant_id)
        except (NotFoundError, UnprocessableEntityError):
            return None
    graph = assistant["graph_id"]
    if graph not in WORKFLOWS:
        return None
    context: dict[str, Any] = dict(cast("dict[str, Any]", assistant.get("context") or {}))
    return graph, context


@functools.cache
def _graph(workflow: Workflow) -> StateGraph[Any, Any, Any, Any]:
    return builder(workflow)()


def _check_command(workflow: Workflow, command: dict[str, Any]) -> None:
    """Raise :class:`UsageError` for a command's ``update`` that ``workflow``'s state schema does
    not allow, or a ``goto`` naming no node of its graph."""
    graph = _graph(workflow)
    check_state_update(graph.state_schema, command.get("update"))
    goto = command.get("goto") or []
    for target in goto if isinstance(goto, list) else [goto]:
        node = target.get("node") if isinstance(target, dict) else target
        if node not in graph.nodes and node != END:
            raise UsageError(
                f"command goto {node!r} is no node of {workflow}; valid: {', '.join(graph.nodes)}"
            )


def _check_input(workflow: Workflow, value: Any, context: dict[str, Any]) -> None:
    """Raise :class:`UsageError` for an input ``workflow``'s first node would refuse under
    ``context`` (its agents, its profile's bounds), or a key its input schema does not name."""
    keys = state_keys(_graph(workflow).input_schema)
    if not isinstance(value, dict):
        raise UsageError(
            f"the {workflow} input must be an object of {', '.join(keys)}, got {value!r:.60}"
        )
    for key in value:
        if key not in keys:
            raise UsageError(f"input key {key!r} is unknown; valid: {', '.join(keys)}")
    check_context(context)
    run = resolve_context(RunContext.model_validate(context), embedded_memory=False)
    if workflow == "orchestration":
        check_task(value, run.agents)
    elif workflow == "meeting":
        check_meeting(value, run.agents)
    else:
        check_items(value, run.agents)
        validators_of(cast("ValidationState", value), run.settings, run.agents)


def check_context(context: Any) -> None:
    """Raise 422 with one line naming a context's unknown key or bad value, and the valid ones."""
    if not context:
        return
    try:
        RunContext.model_validate(context)
    except ValidationError as exc:
        error = exc.errors()[0]
        key = ".".join(str(part) for part in error["loc"])
        if error["type"] == "extra_forbidden":
            detail = f"context key {key!r} is unknown; valid: {', '.join(RunContext.model_fields)}"
        elif key:
            detail = f"context {key}={error['input']!r:.60} is invalid: {error['msg']}"
        else:
            detail = f"context {context!r:.60} is invalid: {error['msg']}"
        raise Auth.exceptions.HTTPException(status_code=422, detail=detail) from None
