"""What a run takes from the thread it continues: whether it may, what it spent, what resumes it.

Resuming (``resume=True`` of :func:`~multiagent.graphs.runner.run_workflow`) continues from the
thread's last checkpoint: completed nodes, and the finished parallel tasks of an interrupted
step, are not run again. A finished validation whose validators failed after retries (an item
no validator answered, or one short of its quorum) runs those validators again, and only those
(:func:`~multiagent.nodes.validator.retry_failed_validators`); the verdicts it has are kept.

A resumed run's budget is the thread's total: what its earlier runs spent
(:func:`thread_spend`) is taken off it, and with Redis configured the budget is shared by
every process running the thread (:func:`thread_budget`). An interrupt (a plan waiting for
approval) is answered by the caller's :data:`Approver` (:func:`continuation`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.types import Command

from multiagent.errors import UsageError
from multiagent.graphs.workflows import Workflow, workflow_of
from multiagent.models.budget import ProjectBudget
from multiagent.nodes.context import WorkflowContext
from multiagent.nodes.usage import thread_totals
from multiagent.safety import redact_input

#: Answers an interrupt's payload: ``True``, ``False``, a dict, or ``None`` for "not now".
Approver = Callable[[dict[str, Any]], Any]


def thread_spend(values: dict[str, Any], runs: dict[str, dict[str, Any]] | None = None) -> float:
    """USD the thread has spent: each recorded run's total, plus the node entries in state of
    the runs that are not recorded."""
    return float(thread_totals(values.get("usage", []) or [], runs or {})["cost_usd"])


def continuation(
    graph: Any, config: RunnableConfig, approver: Approver | None, *, redact: bool
) -> tuple[Any, dict[str, Any] | None]:
    """What continues a thread: ``None``, or ``Command(resume=...)`` at an interrupt.

    The second value is the interrupt's payload when nobody answered it (no approver, or the
    approver returned ``None``): the run must stop there. An answer is input too (a
    reviewer's feedback): with ``redact`` it is redacted before LangGraph stores it.
    """
    pending = graph.get_state(config).interrupts
    if not pending:
        return None, None
    answers = {
        i.id: redact_input(approver(dict(i.value)), enabled=redact)
        if approver is not None
        else None
        for i in pending
    }
    if any(answer is None for answer in answers.values()):
        return None, dict(pending[0].value)
    if len(pending) == 1:
        return Command(resume=answers[pending[0].id]), None
    return Command(resume=answers), None


def thread_budget(
    context: WorkflowContext, *, thread_id: str, budget_usd: float | None
) -> ProjectBudget | None:
    """The thread's budget in Redis when ``MULTIAGENT_REDIS_URL`` is set (two processes running
    or resuming the same thread then cannot pass it together); else ``None``: in-process only."""
    url = context.settings.redis_url
    if not url or budget_usd is None:
        return None
    from multiagent.models.budget_redis import thread_budget

    config = context.settings.profile.budget
    return thread_budget(
        url, thread_id=thread_id, cap_usd=budget_usd, lease_s=config.lease_s,
        degraded_fraction=config.degraded_fraction,
    )  # fmt: skip


#: The command that runs each workflow.
_COMMAND: dict[Workflow, str] = {
    "orchestration": "run",
    "meeting": "meeting",
    "validation": "validate",
}


def check_thread(
    workflow: Workflow,
    *,
    checkpointer: BaseCheckpointSaver[Any],
    thread_id: str,
    resume: bool,
) -> None:
    """Fail with one line when ``--resume`` names an unknown thread or one of another workflow,
    or when a new run would reuse an existing thread's id."""
    found = checkpointer.get_tuple({"configurable": {"thread_id": thread_id}})
    if resume and found is None:
        raise UsageError(f"unknown thread {thread_id!r}; see `multiagent threads list`")
    if not resume and found is not None:
        raise UsageError(
            f"thread {thread_id!r} already exists; add --resume to continue it or choose a new id"
        )
    if found is not None:
        owner = workflow_of(found)
        if owner is None:
            raise UsageError(f"thread {thread_id!r} was not made by a multiagent workflow")
        if owner != workflow:
            raise UsageError(
                f"thread {thread_id!r} belongs to the {owner} workflow, not the {workflow} "
                f"workflow; resume it with `multiagent {_COMMAND[owner]} --thread {thread_id} "
                "--resume`"
            )
