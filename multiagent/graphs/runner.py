"""Run a workflow as a thread of the checkpointer: stream it, pause for approval, stop on budget.

This is a composition root: it compiles a graph with the caller's checkpointer and runs it,
streaming what it does to a watcher as :class:`~multiagent.graphs.run_events.WorkflowEvent` s
(:mod:`multiagent.graphs.run_events`). A run ends in one of these states, always with the
thread's values so far:

- ``completed`` (or ``rejected``, a plan the reviewer turned down);
- ``awaiting_approval``: paused at ``interrupt()`` with no one to answer;
- ``budget_exceeded``: the ledger refused the next call; resumable with a larger budget;
- ``failed``: a provider kept failing after retries (for a validation: every validator of an
  item failed, so it has no verdict); resumable;
- ``interrupted``: stopped by Ctrl-C (``KeyboardInterrupt``); resumable, the finished steps kept.

What resuming (``resume=True``) takes from the thread is :mod:`multiagent.graphs.resuming`.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from typing import Any

from langchain_core.callbacks import BaseCallbackHandler
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.types import Durability

from multiagent._crash import crash_point
from multiagent._interrupt import terminated
from multiagent.errors import BudgetExceededError
from multiagent.graphs._run_config import graph_config
from multiagent.graphs.resuming import (
    Approver,
    check_thread,
    continuation,
    thread_budget,
    thread_spend,
)
from multiagent.graphs.run_events import StreamWatcher, WorkflowEvent
from multiagent.graphs.run_outcome import Status, WorkflowOutcome, from_ctrl_c
from multiagent.graphs.threads import unanswered_items
from multiagent.graphs.workflows import Workflow, compile_workflow
from multiagent.models.budget import ProjectBudget
from multiagent.models.pipeline import RunLedger
from multiagent.nodes.context import WorkflowContext
from multiagent.nodes.failures import describe_error, provider_errors
from multiagent.nodes.validator import failed_validators, retry_failed_validators
from multiagent.observability.live_starts import registered_run
from multiagent.persistence.run_usage import record_run, recorded_runs
from multiagent.safety import check_id_private, redact_input


class _ShutPoolCallbacks(logging.Filter):
    """Drops ``concurrent.futures``' report of a task that finished after Ctrl-C shut the pool.

    LangGraph's done-callback then tries to save the task's writes through the closed pool and
    ``concurrent.futures`` logs the ``RuntimeError`` with a traceback. The run is already being
    marked ``interrupted``; the unsaved step runs again on resume, so there is nothing to report.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not (isinstance(exc, RuntimeError) and "after shutdown" in str(exc))


logging.getLogger("concurrent.futures").addFilter(_ShutPoolCallbacks())


def run_workflow(
    workflow: Workflow,
    inputs: Any,
    *,
    context: WorkflowContext,
    checkpointer: BaseCheckpointSaver[Any] | None,
    thread_id: str,
    resume: bool = False,
    approver: Approver | None = None,
    on_event: Callable[[WorkflowEvent], None] | None = None,
    max_concurrency: int | None = None,
    metadata: dict[str, Any] | None = None,
    callbacks: Sequence[BaseCallbackHandler] | None = None,
    correlation_id: str | None = None,
    shared_ledger: RunLedger | None = None,
    live: bool = True,
    guard_budget: Callable[[ProjectBudget | None], ProjectBudget] | None = None,
    durability: Durability = "sync",
) -> WorkflowOutcome:
    """Run (or resume) ``workflow`` on thread ``thread_id`` and report how it ended.

    Args:
        workflow: ``"orchestration"``, ``"meeting"`` or ``"validation"``.
        inputs: The workflow's input (see :mod:`multiagent.graphs.inputs`); ignored on resume.
        context: The run context; its ledger's budget is the thread's total budget, and what
            the thread already spent is taken off it.
        checkpointer: Where the thread lives (see :func:`multiagent.persistence.checkpointer.
            open_checkpointer`); ``None`` runs without persistence (no resume, no approval).
        thread_id: The thread. With a profile that redacts, one holding personal data is
            refused: it would be stored and traced as given (a batch's chunk runs, not
            ``live``, are named after their batch, checked by ``batch_cross_validate``).
        resume: Continue the thread from its last checkpoint instead of starting it.
        approver: Answers a plan-approval interrupt; without it the run stops there.
        on_event: Called with every :class:`WorkflowEvent`, in order.
        max_concurrency: Bound on parallel tasks (``max_concurrency`` at the config's top level).
        metadata: Extra checkpoint metadata (the workflow name is always added).
        callbacks: LangChain callback handlers for the run (tracing, counting calls).
        correlation_id: Ties this run's trace to the caller's request; generated when ``None``.
        shared_ledger: Record into this ledger (and reserve against its budget) instead of a new
            one: the runs of one batch's chunks share one run's ledger, so chunks running in
            parallel cannot overspend together.
        live: List the run on the dashboard's live runs page (every process's runs meet in
            ``MULTIAGENT_HOME/runs.sqlite``); a batch's chunks are not listed one by one.
        guard_budget: Wraps the thread's shared budget (``None`` without one), which every
            call of the run reserves in before it starts: a queue worker's question whether
            the run is still its own (:mod:`multiagent.distributed.entry_guard`).
        durability: When ``checkpointer`` is written: ``"sync"`` (default) after every step,
            so a killed process finds every finished step; ``"exit"`` once, when the run ends
            or stops (with the writes of the tasks that finished in the step that stopped),
            for a thread in memory that nobody reads while it runs (a batch's chunk).

    Raises:
        UsageError: ``resume`` for a thread that does not exist or belongs to another workflow;
            a thread id holding personal data when the profile redacts.
    """
    if live:
        check_id_private(
            thread_id, kind="thread id", source="thread_id",
            redacting=context.settings.profile.features.pii_redaction,
        )  # fmt: skip
    # listed as running before it reads its thread, so prune leaves the thread whole
    # (:mod:`multiagent.observability.live_starts`)
    listed = (
        registered_run(context.settings, thread_id)
        if checkpointer is not None and live
        else nullcontext()
    )
    with listed:
        crash_point("run-registered")
        return _run_workflow(
            workflow,
            inputs,
            context=context,
            checkpointer=checkpointer,
            thread_id=thread_id,
            resume=resume,
            approver=approver,
            on_event=on_event,
            max_concurrency=max_concurrency,
            metadata=metadata,
            callbacks=callbacks,
            correlation_id=correlation_id,
            shared_ledger=shared_ledger,
            live=live,
            guard_budget=guard_budget,
            durability=durability,
        )


def _run_workflow(
    workflow: Workflow,
    inputs: Any,
    *,
    context: WorkflowContext,
    checkpointer: BaseCheckpointSaver[Any] | None,
    thread_id: str,
    resume: bool,
    approver: Approver | None,
    on_event: Callable[[WorkflowEvent], None] | None,
    max_concurrency: int | None,
    metadata: dict[str, Any] | None,
    callbacks: Sequence[BaseCallbackHandler] | None,
    correlation_id: str | None,
    shared_ledger: RunLedger | None,
    live: bool,
    guard_budget: Callable[[ProjectBudget | None], ProjectBudget] | None,
    durability: Durability,
) -> WorkflowOutcome:
    """:func:`run_workflow`, once the run is listed."""
    if resume and checkpointer is not None:
        check_thread(workflow, checkpointer=checkpointer, thread_id=thread_id, resume=True)
    # the boundary: with redaction on, no checkpoint, memory, cache or trace sees raw input
    redact = context.settings.profile.features.pii_redaction
    inputs = redact_input(inputs, enabled=redact)
    graph = compile_workflow(workflow, checkpointer=checkpointer)
    # the tasks' runner at concurrency 1, held here for the whole run
    config, _inline_tasks = graph_config(
        workflow, context=context, thread_id=thread_id, correlation_id=correlation_id, live=live,
        metadata=metadata, max_concurrency=max_concurrency, callbacks=callbacks,
    )  # fmt: skip
    spent_before = 0.0
    command: Any = inputs
    pending: dict[str, Any] | None = None
    kept: frozenset[str] = frozenset()
    if resume:
        snapshot = graph.get_state(config)
        kept = frozenset(task.id for task in snapshot.tasks if task.result is not None)
        runs = recorded_runs(checkpointer, thread_id) if checkpointer is not None else {}
        spent_before = thread_spend(snapshot.values or {}, runs)
        command, pending = continuation(graph, config, approver, redact=redact)
        finished = not snapshot.next and not snapshot.tasks
        if workflow == "validation" and finished and pending is None:
            # a finished validation: its failed validators, and only they, run again
            command = retry_failed_validators(snapshot.values or {})
    budget = context.ledger.budget_usd
    shared = thread_budget(context, thread_id=thread_id, budget_usd=budget)
    ledger = shared_ledger or RunLedger(
        budget_usd=None if budget is None else max(0.0, budget - spent_before),
        shared=shared if guard_budget is None else guard_budget(shared),
        spent_before=spent_before,
        given_usd=budget,
    )
    context = dataclasses.replace(context, ledger=ledger)
    watcher = StreamWatcher(on_event, kept=kept)
    began = time.perf_counter()

    def record() -> dict[str, dict[str, Any]]:
        """Keep this run's totals beside the thread (a node that raised left them nowhere
        else); return every run's."""
        own = {ledger.run_id: ledger.totals()}
        if checkpointer is None or shared_ledger is not None:
            return own
        if ledger.calls:
            totals = own[ledger.run_id]
            record_run(checkpointer, thread_id=thread_id, run_id=ledger.run_id, totals=totals)
        return {**recorded_runs(checkpointer, thread_id), **own}

    def outcome(status: Status, message: str = "", error: str | None = None) -> WorkflowOutcome:
        snapshot = graph.get_state(config) if checkpointer is not None else None
        values = dict(snapshot.values) if snapshot is not None else dict(last_values)
        return WorkflowOutcome(
            workflow=workflow,
            thread_id=thread_id,
            status=status,
            values=values,
            ledger=ledger,
            seconds=round(time.perf_counter() - began, 4),
            message=message,
            error=error,
            interrupt=pending,
            resumed=resume,
            spent_before_usd=round(spent_before, 8),
            timings=watcher.timings,
            runs=record(),
        )

    last_values: dict[str, Any] = {}
    # watching costs: progress and tokens only when someone watches, values only without a
    # checkpointer to read them back from
    modes: list[str] = ["tasks", "messages", "custom"] if on_event is not None else []
    if checkpointer is None or not modes:
        modes.append("values")
    if pending is not None:
        return outcome("awaiting_approval", "the plan is waiting for approval")
    try:
        while True:
            for mode, data in graph.stream(  # (mode, data) pairs: stream_mode is a list
                command,
                config,
                context=context,
                stream_mode=modes,  # type: ignore[arg-type]
                # a killed process must find every finished step on disk
                durability=durability if checkpointer is not None else None,
            ):
                if mode == "tasks" and isinstance(data, dict):
                    watcher.task(data)
                elif mode == "messages":
                    watcher.message(*data)
                elif mode == "custom":
                    watcher.custom(data)
                elif mode == "values" and isinstance(data, dict):
                    last_values = data
            if checkpointer is None:
                break
            command, pending = continuation(graph, config, approver, redact=redact)
            if command is None:
                break
    except BudgetExceededError as exc:
        stopped = outcome("budget_exceeded", str(exc), describe_error(exc, redact=redact))
        stopped.daily_cap = exc.daily
        return stopped
    except provider_errors() as exc:
        failure = describe_error(exc, redact=redact)
        return outcome("failed", "a model call kept failing after retries", failure)
    except (KeyboardInterrupt, RuntimeError) as exc:
        if not from_ctrl_c(exc) or checkpointer is None:
            _record_anyway(record)
            raise  # without a thread to resume, the caller (a batch) decides
        # the steps finished before the signal are on disk (durability="sync"); the thread
        # resumes from there
        by = "SIGTERM" if terminated() else "Ctrl-C"
        return outcome("interrupted", f"stopped by {by}", "KeyboardInterrupt")
    except BaseException:
        _record_anyway(record)
        raise
    if pending is not None:
        return outcome("awaiting_approval", "the plan is waiting for approval")
    result = outcome("completed")
    unanswered = unanswered_items(result.values) if checkpointer is not None else []
    if workflow == "validation" and unanswered:
        # the provider failed every validator of an item: that is an outage, not a verdict
        # (a batch's chunks, run without a checkpointer, leave these items to the batch)
        errors = sorted({f["error"] for f in result.values.get("failures", [])})
        result.status = "failed"
        result.message = (
            f"no validator answered item{'s' if len(unanswered) > 1 else ''} "
            f"{', '.join(unanswered)} after retries; "
            "--resume runs the validators again"
        )
        result.error = "; ".join(errors[:3]) or None
    elif workflow == "validation" and checkpointer is not None:
        retried = sorted({task["validator"] for task in failed_validators(result.values)})
        if retried:  # the verdict stands on fewer validators: say how to complete it
            plural = len(retried) > 1
            result.message = (
                f"validator{'s' if plural else ''} {', '.join(retried)} gave no verdict (see "
                f"failures); --resume runs only {'them' if plural else 'it'} again"
            )
    approval = result.values.get("approval")
    if workflow == "orchestration" and approval is not None and not approval["approved"]:
        result.status, result.message = "rejected", "the plan was rejected; no agent worked"
    return result


def _record_anyway(record: Callable[[], object]) -> None:
    """Keep a run's totals on its way out with an error, never hiding that error."""
    try:
        record()
    except Exception:  # the error being raised matters more; the run's usage is in its ledger
        logging.getLogger(__name__).warning("could not keep the run's usage", exc_info=True)
