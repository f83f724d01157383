"""Threads in the checkpointer: list them, show a thread's state, walk its checkpoints.

Time travel: :func:`thread_state` with a ``checkpoint_id`` shows the state as it was at that
checkpoint; :func:`thread_history` lists every checkpoint of a thread, newest first.
"""

from __future__ import annotations

from typing import Any

from langchain_core.messages import BaseMessage
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.types import StateSnapshot

from multiagent.errors import UsageError
from multiagent.graphs.workflows import (
    WORKFLOWS,
    Workflow,
    compile_workflow,
    subject_of,
    workflow_of,
)
from multiagent.nodes.usage import thread_totals
from multiagent.persistence.run_usage import recorded_runs


def _config(thread_id: str, checkpoint_id: str | None = None) -> RunnableConfig:
    configurable: dict[str, Any] = {"thread_id": thread_id}
    if checkpoint_id is not None:
        configurable["checkpoint_id"] = checkpoint_id
    return {"configurable": configurable}


def _workflow_of(saver: BaseCheckpointSaver[Any], thread_id: str) -> Workflow:
    found = saver.get_tuple(_config(thread_id))
    if found is None:
        raise UsageError(f"unknown thread {thread_id!r}; see `multiagent threads list`")
    workflow = workflow_of(found)
    if workflow is None:
        raise UsageError(f"thread {thread_id!r} was not made by a multiagent workflow")
    return workflow


_CTRL_C = ("KeyboardInterrupt", "StopRequested")


def unanswered_items(values: dict[str, Any]) -> list[str]:
    """The ids of a validation's items no validator answered (every one failed after retries):
    no verdict, so not a result; a batch runs them again, and so does ``--resume``."""
    return [r["id"] for r in values.get("results", []) or [] if r["responded"] == 0]


def status_of(workflow: Workflow, snapshot: StateSnapshot) -> str:
    """``completed``, ``rejected``, ``awaiting_approval``, ``budget_exceeded``, ``failed`` or
    ``interrupted`` (stopped between or inside steps: Ctrl-C, or the process was killed).

    A run stopped inside a parallel step may leave every task of that step finished but the step
    not applied: nothing is ``next``, yet tasks are pending (resuming applies them and goes on),
    so only a thread with neither is complete.
    """
    if snapshot.interrupts:
        return "awaiting_approval"
    if not snapshot.next and not snapshot.tasks:
        approval = (snapshot.values or {}).get("approval")
        rejected = workflow == "orchestration" and approval is not None and not approval["approved"]
        if workflow == "validation" and unanswered_items(snapshot.values or {}):
            return "failed"  # the provider failed every validator of an item: resumable
        return "rejected" if rejected else "completed"
    errors = [str(task.error) for task in snapshot.tasks if task.error is not None]
    if any("BudgetExceededError" in error for error in errors):
        return "budget_exceeded"
    # Ctrl-C: Python's own, or the stop asked for at a model call (multiagent._interrupt)
    if any(error and not any(name in error for name in _CTRL_C) for error in errors):
        return "failed"
    return "interrupted"


def _readable(values: dict[str, Any]) -> dict[str, Any]:
    """State values with chat messages (a meeting's ``messages``) as plain ``{type, name,
    content}`` dicts, so a JSON document shows them as chat, not as reprs."""

    def plain(value: Any) -> Any:
        if isinstance(value, BaseMessage):
            return {"type": value.type, "name": value.name, "content": value.content}
        if isinstance(value, list):
            return [plain(item) for item in value]
        return value

    return {key: plain(value) for key, value in values.items()}


def _summary(
    thread_id: str,
    workflow: Workflow,
    snapshot: StateSnapshot,
    count: int,
    runs: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    values = dict(snapshot.values or {})
    return {
        "thread_id": thread_id,
        "workflow": workflow,
        "status": status_of(workflow, snapshot),
        "subject": subject_of(workflow, values),
        "checkpoints": count,
        "updated_at": snapshot.created_at,
        "next": list(snapshot.next),
        "cost_usd": thread_totals(values.get("usage", []), runs)["cost_usd"],
    }


def list_threads(
    saver: BaseCheckpointSaver[Any], *, limit: int | None = None
) -> list[dict[str, Any]]:
    """Every workflow thread, most recently updated first, with its status and subject."""
    latest: dict[str, tuple[Workflow, int]] = {}
    for item in saver.list(None):
        configurable = item.config.get("configurable", {})
        if configurable.get("checkpoint_ns"):
            continue
        thread = str(configurable.get("thread_id"))
        if thread in latest:
            latest[thread] = (latest[thread][0], latest[thread][1] + 1)
            continue
        workflow = workflow_of(item)
        if workflow is not None:
            latest[thread] = (workflow, 1)
    graphs = {name: compile_workflow(name, checkpointer=saver) for name in WORKFLOWS}
    rows = [
        _summary(
            thread,
            workflow,
            graphs[workflow].get_state(_config(thread)),
            count,
            recorded_runs(saver, thread),
        )
        for thread, (workflow, count) in latest.items()
    ]
    rows.sort(key=lambda row: str(row["updated_at"] or ""), reverse=True)
    return rows[:limit] if limit is not None else rows


def thread_state(
    saver: BaseCheckpointSaver[Any], thread_id: str, *, checkpoint_id: str | None = None
) -> dict[str, Any]:
    """A thread's state: now, or at ``checkpoint_id`` (time travel).

    Raises:
        UsageError: The thread or the checkpoint does not exist.
    """
    workflow = _workflow_of(saver, thread_id)
    graph = compile_workflow(workflow, checkpointer=saver)
    snapshot = graph.get_state(_config(thread_id, checkpoint_id))
    if snapshot.created_at is None:
        raise UsageError(
            f"thread {thread_id!r} has no checkpoint {checkpoint_id!r}; "
            f"see `multiagent threads history {thread_id}`"
        )
    here = snapshot.config.get("configurable", {}).get("checkpoint_id")
    # an earlier checkpoint is a point the thread went past, not where it stopped: its pending
    # steps ran after it, so it is neither interrupted nor anything else the thread is now
    latest = checkpoint_id is None or here == _head_checkpoint(graph, thread_id)
    return {
        "thread_id": thread_id,
        "workflow": workflow,
        "checkpoint_id": here,
        "step": (snapshot.metadata or {}).get("step"),
        "created_at": snapshot.created_at,
        "status": status_of(workflow, snapshot) if latest else "earlier",
        "next": list(snapshot.next),
        "errors": [str(t.error) for t in snapshot.tasks if t.error is not None],
        "interrupts": [i.value for i in snapshot.interrupts],
        # now: every run's totals; at an earlier checkpoint: what its state's nodes had used
        "usage": thread_totals(
            (snapshot.values or {}).get("usage", []),
            recorded_runs(saver, thread_id) if latest else {},
        ),
        "values": _readable(dict(snapshot.values or {})),
    }


def _head_checkpoint(graph: Any, thread_id: str) -> str | None:
    head = graph.get_state(_config(thread_id))
    found: str | None = head.config.get("configurable", {}).get("checkpoint_id")
    return found


_INPUT_LISTS = frozenset({"usage", "team", "participants", "validators", "items"})


def _counts(values: dict[str, Any]) -> dict[str, int]:
    return {
        key: len(value)
        for key, value in values.items()
        if isinstance(value, list) and key not in _INPUT_LISTS
    }


def thread_history(saver: BaseCheckpointSaver[Any], thread_id: str) -> list[dict[str, Any]]:
    """Every checkpoint of a thread, newest first: step, time, what ran next, list sizes.

    Raises:
        UsageError: The thread does not exist.
    """
    workflow = _workflow_of(saver, thread_id)
    graph = compile_workflow(workflow, checkpointer=saver)
    rows = []
    for snapshot in graph.get_state_history(_config(thread_id)):
        metadata = snapshot.metadata or {}
        rows.append(
            {
                "checkpoint_id": snapshot.config.get("configurable", {}).get("checkpoint_id"),
                "step": metadata.get("step"),
                "source": metadata.get("source"),
                "created_at": snapshot.created_at,
                "next": list(snapshot.next),
                "counts": _counts(dict(snapshot.values or {})),
            }
        )
    return rows
