"""Run a workflow as a thread of the checkpointer: stream it, pause for approval, stop on budget.

This is a composition root: it compiles a graph with the caller's checkpointer and runs it with
``stream_mode=["tasks", "messages", "custom"]``, turning what LangGraph streams into
:class:`WorkflowEvent` s: a node starts or ends; a token of any agent arrives (named after the
agent, keyed by the task that produced it, so parallel agents stay apart); a ``custom`` event a
node emitted (:mod:`multiagent.nodes.stream_events`: an agent's cost, a moderator's judgement, a
verdict). A run ends in one of these states, always with the thread's values so far:

- ``completed`` (or ``rejected``, a plan the reviewer turned down);
- ``awaiting_approval``: paused at ``interrupt()`` with no one to answer;
- ``budget_exceeded``: the ledger refused the next call; resumable with a larger budget;
- ``failed``: a provider kept failing after retries (for a validation: every validator of an
  item failed, so it has no verdict); resumable;
- ``interrupted``: stopped by Ctrl-C (``KeyboardInterrupt``); resumable, the finished steps kept.

Resuming (``resume=True``) continues from the thread's last checkpoint: completed nodes, and the
finished parallel tasks of an interrupted step, are not run again. A finished validation whose
validators failed after retries (an item no validator answered, or one short of its quorum) runs
those validators again, and only those (:func:`~multiagent.nodes.validator.
retry_failed_validators`); the verdicts it has are kept.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, Literal

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import AIMessageChunk
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.types import Command, Durability

from multiagent._crash import crash_point
from multiagent._interrupt import terminated
from multiagent.errors import BudgetExceededError, UsageError
from multiagent.graphs._inline import one_task_at_a_time
from multiagent.graphs.threads import unanswered_items
from multiagent.graphs.workflows import Workflow, compile_workflow, task_label, workflow_of
from multiagent.models.budget import ProjectBudget
from multiagent.models.pipeline import RunLedger
from multiagent.nodes.context import WorkflowContext
from multiagent.nodes.failures import describe_error, provider_errors
from multiagent.nodes.usage import thread_totals
from multiagent.nodes.validator import failed_validators, retry_failed_validators
from multiagent.observability.live_starts import registered_run
from multiagent.observability.tracing import run_config
from multiagent.persistence.run_usage import record_run, recorded_runs
from multiagent.safety import check_id_private, redact_input

Status = Literal[
    "completed", "rejected", "awaiting_approval", "budget_exceeded", "failed", "interrupted"
]


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

#: Answers an interrupt's payload: ``True``, ``False``, a dict, or ``None`` for "not now".
Approver = Callable[[dict[str, Any]], Any]


@dataclass(frozen=True)
class WorkflowEvent:
    """Something a watcher may show.

    ``start``/``end`` of a task (``task`` is its id); a ``token`` of ``agent`` in ``node`` (its
    ``task`` tells parallel agents apart); or a ``custom`` event a node emitted, in ``data``.
    """

    kind: Literal["start", "end", "token", "custom"]
    node: str
    label: str
    text: str = ""
    seconds: float = 0.0
    error: str | None = None
    agent: str = ""
    task: str = ""
    data: dict[str, Any] | None = None


@dataclass
class WorkflowOutcome:
    """How a run ended and the thread's state at that point."""

    workflow: Workflow
    thread_id: str
    status: Status
    values: dict[str, Any]
    ledger: RunLedger
    seconds: float
    message: str = ""
    error: str | None = None
    interrupt: dict[str, Any] | None = None
    resumed: bool = False
    spent_before_usd: float = 0.0
    timings: list[dict[str, Any]] = field(default_factory=list)
    #: What each run of the thread spent, this one included, by run id (see
    #: :mod:`multiagent.persistence.run_usage`); a run without a checkpointer has only its own.
    runs: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: ``budget_exceeded`` by the project's daily cap, not the run's budget.
    daily_cap: bool = False


def thread_spend(values: dict[str, Any], runs: dict[str, dict[str, Any]] | None = None) -> float:
    """USD the thread has spent: each recorded run's total, plus the node entries in state of
    the runs that are not recorded."""
    return float(thread_totals(values.get("usage", []) or [], runs or {})["cost_usd"])


def _error_text(error: object) -> str:
    """How a task's failure is shown: Ctrl-C or a run given up (no message) as ``interrupted``."""
    if isinstance(error, KeyboardInterrupt):
        return "interrupted"
    return str(error) or type(error).__name__


class _Watcher:
    """Turns LangGraph's stream into events and node timings."""

    def __init__(
        self,
        on_event: Callable[[WorkflowEvent], None] | None,
        *,
        kept: frozenset[str] = frozenset(),
    ) -> None:
        self.on_event = on_event
        self.started: dict[str, tuple[str, str, float]] = {}
        self.timings: list[dict[str, Any]] = []
        #: Tasks a resumed step finished before it stopped: LangGraph announces them again but
        #: applies their kept writes without running them, so nobody is shown them starting.
        self.kept = kept

    def _emit(self, event: WorkflowEvent) -> None:
        if self.on_event is not None:
            self.on_event(event)

    def task(self, data: dict[str, Any]) -> None:
        if data["id"] in self.kept:
            return
        if "input" in data:
            label = task_label(data["name"], data["input"])
            self.started[data["id"]] = (data["name"], label, time.perf_counter())
            self._emit(WorkflowEvent("start", data["name"], label, task=data["id"]))
            return
        name, label, began = self.started.pop(
            data["id"], (data["name"], data["name"], time.perf_counter())
        )
        seconds = round(time.perf_counter() - began, 4)
        error = data.get("error")
        if data.get("interrupts"):
            label += " (waiting)"
        self.timings.append({"node": name, "label": label, "seconds": seconds})
        failed = None if error is None else _error_text(error)
        recorded = data.get("result")
        if failed is None and isinstance(recorded, dict) and recorded.get("failures"):
            # a validator that gave no verdict returns (its failure recorded), it does not raise
            failed = f"no verdict: {recorded['failures'][0]['error']}"
        self._emit(
            WorkflowEvent("end", name, label, seconds=seconds, error=failed, task=data["id"])
        )

    def message(self, chunk: Any, metadata: dict[str, Any]) -> None:
        # text tokens only: a structured answer's tool-call chunks carry no text
        if not isinstance(chunk, AIMessageChunk) or not chunk.text:
            return
        node = str(metadata.get("langgraph_node", ""))
        agent = str(metadata.get("agent", "") or node)
        task = str(metadata.get("langgraph_checkpoint_ns", "")).rsplit(":", 1)[-1]
        self._emit(WorkflowEvent("token", node, agent, text=chunk.text, agent=agent, task=task))

    def custom(self, data: Any) -> None:
        if isinstance(data, dict) and "type" in data:
            node = str(data.get("node", ""))
            agent = str(data.get("agent", ""))
            self._emit(WorkflowEvent("custom", node, agent or node, agent=agent, data=data))


def _resume_command(
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


def _thread_budget(
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
    # one task at a time: on this thread, not on a pool of one (held here for the whole run:
    # LangGraph keeps only a weak reference to it)
    _inline_tasks = one_task_at_a_time(config) if max_concurrency == 1 else None
    if max_concurrency is not None and _inline_tasks is None:
        # not with inline tasks: LangGraph also sizes its background pool (checkpoint writes, the
        # waiter a streamed run parks there) by it, and a pool of one thread held by the waiter
        # never wrote the first checkpoint: every streamed run at concurrency 1 hung
        config["max_concurrency"] = max_concurrency
    handlers = [*(callbacks or [])]
    # a caller that brought its own tracing handler keeps it, and gets no second one
    handlers += [h for h in traced["callbacks"] if not any(type(g) is type(h) for g in handlers)]
    if handlers:
        config["callbacks"] = handlers
    spent_before = 0.0
    command: Any = inputs
    pending: dict[str, Any] | None = None
    kept: frozenset[str] = frozenset()
    if resume:
        snapshot = graph.get_state(config)
        kept = frozenset(task.id for task in snapshot.tasks if task.result is not None)
        runs = recorded_runs(checkpointer, thread_id) if checkpointer is not None else {}
        spent_before = thread_spend(snapshot.values or {}, runs)
        command, pending = _resume_command(graph, config, approver, redact=redact)
        finished = not snapshot.next and not snapshot.tasks
        if workflow == "validation" and finished and pending is None:
            # a finished validation: its failed validators, and only they, run again
            command = retry_failed_validators(snapshot.values or {})
    budget = context.ledger.budget_usd
    shared = _thread_budget(context, thread_id=thread_id, budget_usd=budget)
    ledger = shared_ledger or RunLedger(
        budget_usd=None if budget is None else max(0.0, budget - spent_before),
        shared=shared if guard_budget is None else guard_budget(shared),
        spent_before=spent_before,
        given_usd=budget,
    )
    context = dataclasses.replace(context, ledger=ledger)
    watcher = _Watcher(on_event, kept=kept)
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
            command, pending = _resume_command(graph, config, approver, redact=redact)
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


def from_ctrl_c(exc: BaseException) -> bool:
    """Whether ``exc`` is Ctrl-C, or what Ctrl-C became inside a lock of the thread pool.

    A ``KeyboardInterrupt`` landing while ``threading.Condition`` releases its lock surfaces as
    ``RuntimeError: release unlocked lock`` with the interrupt as its context.
    """
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, KeyboardInterrupt):
            return True
        seen = seen.__context__
    return False


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
