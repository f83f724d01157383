"""The configuration a run hands LangGraph: its thread, its trace, its bound on parallel tasks.

The trace's pieces (run name, tags, metadata, tracing callbacks) come from
:func:`~multiagent.observability.tracing.run_config`; a caller's own callbacks come first, and
keep their place. ``max_concurrency`` rides at the config's top level (under ``configurable``
LangGraph ignores it), except at 1, where the tasks run on the calling thread instead
(:mod:`multiagent.graphs._inline`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.runnables import RunnableConfig

from multiagent.graphs._inline import InlineTasks, one_task_at_a_time
from multiagent.graphs.workflows import Workflow
from multiagent.nodes.context import WorkflowContext
from multiagent.observability.tracing import run_config


def graph_config(
    workflow: Workflow,
    *,
    context: WorkflowContext,
    thread_id: str,
    correlation_id: str | None,
    live: bool,
    metadata: dict[str, Any] | None,
    max_concurrency: int | None,
    callbacks: Sequence[BaseCallbackHandler] | None,
) -> tuple[RunnableConfig, InlineTasks | None]:
    """The run's config, and what runs its tasks inline at concurrency 1 (``None`` otherwise),
    which the caller holds for the whole run: LangGraph keeps only a weak reference to it."""
    traced = run_config(
        workflow=workflow,
        settings=context.settings,
        thread_id=thread_id,
        correlation_id=correlation_id,
        budget_usd=context.ledger.budget_usd,
        live=live,
    )
    config: RunnableConfig = {
        "configurable": {"thread_id": thread_id},
        "metadata": {**traced["metadata"], **(metadata or {}), "workflow": workflow},
        "run_name": traced["run_name"],
        "tags": [*traced["tags"], f"workflow:{workflow}"],
    }
    # one task at a time: on this thread, not on a pool of one
    inline_tasks = one_task_at_a_time(config) if max_concurrency == 1 else None
    if max_concurrency is not None and inline_tasks is None:
        # not with inline tasks: LangGraph also sizes its background pool (checkpoint writes, the
        # waiter a streamed run parks there) by it, and a pool of one thread held by the waiter
        # never wrote the first checkpoint: every streamed run at concurrency 1 hung
        config["max_concurrency"] = max_concurrency
    handlers = [*(callbacks or [])]
    # a caller that brought its own tracing handler keeps it, and gets no second one
    handlers += [h for h in traced["callbacks"] if not any(type(g) is type(h) for g in handlers)]
    if handlers:
        config["callbacks"] = handlers
    return config, inline_tasks
