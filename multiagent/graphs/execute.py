"""Run a workflow as a thread of the configured checkpointer: what the CLI and notebooks call."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from multiagent.errors import UsageError
from multiagent.graphs.resuming import Approver, check_thread
from multiagent.graphs.run_events import WorkflowEvent
from multiagent.graphs.run_outcome import WorkflowOutcome
from multiagent.graphs.runner import run_workflow
from multiagent.graphs.workflows import Workflow, new_thread_id, subject_of
from multiagent.nodes.context import WorkflowContext
from multiagent.persistence.checkpointer import checkpoint_path, open_checkpointer
from multiagent.policies import Settings
from multiagent.safety import check_id_private, redact_input

_SUBJECT_KEY: dict[Workflow, str] = {"orchestration": "task", "meeting": "topic"}


def _check_same_subject(workflow: Workflow, stored: dict[str, Any], inputs: Any) -> None:
    key = _SUBJECT_KEY.get(workflow)
    if key is None or not isinstance(inputs, dict) or key not in stored:
        return
    if " ".join(str(inputs.get(key, "")).split()) != " ".join(str(stored[key]).split()):
        raise UsageError(
            f"the {key} given differs from the {key} of the thread being resumed; "
            f"leave it out to resume"
        )


def execute_workflow(
    workflow: Workflow,
    inputs: Any,
    *,
    settings: Settings,
    context: WorkflowContext | Callable[[], WorkflowContext],
    thread_id: str | None = None,
    resume: bool = False,
    approver: Approver | None = None,
    on_event: Callable[[WorkflowEvent], None] | None = None,
    max_concurrency: int | None = None,
) -> WorkflowOutcome:
    """Run ``workflow`` on a new thread, or resume thread ``thread_id``, in the checkpointer.

    Args:
        workflow: ``"orchestration"``, ``"meeting"`` or ``"validation"``.
        inputs: The checked input (:mod:`multiagent.graphs.inputs`); ``None`` when resuming.
        settings: Resolved settings; they choose the checkpointer.
        context: The run context (its ledger's budget is the thread's budget), or a function
            that builds it once the thread has been checked (so bad input opens nothing).
        thread_id: The thread; a new id is generated when ``None`` (not allowed with resume).
        resume: Continue the thread from its last checkpoint.
        approver: Answers plan-approval interrupts.
        on_event: Receives node starts and ends and streamed tokens.
        max_concurrency: Bound on parallel tasks.

    Raises:
        UsageError: Resume without a thread id, an unknown thread, a thread of another
            workflow, a new run on an existing thread id, a task that differs on resume, or
            (with a profile that redacts) a thread id holding personal data.
    """
    redacting = settings.profile.features.pii_redaction
    if thread_id:  # before anything is opened: refused, it leaves no trace
        check_id_private(thread_id, kind="thread id", source="--thread", redacting=redacting)
    if resume and not thread_id:
        raise UsageError("--resume needs --thread ID; see `multiagent threads list`")
    if resume and not settings.checkpoint_url and not checkpoint_path(settings).exists():
        raise UsageError(f"unknown thread {thread_id!r}; there are no threads yet")
    thread = thread_id or new_thread_id(workflow)
    # before the thread's subject is taken from it, and before a resumed task is compared
    inputs = redact_input(inputs, enabled=redacting)
    with open_checkpointer(settings) as saver:
        check_thread(workflow, checkpointer=saver, thread_id=thread, resume=resume)
        if resume and inputs is not None:
            found = saver.get_tuple({"configurable": {"thread_id": thread}})
            stored = dict(found.checkpoint.get("channel_values", {})) if found else {}
            _check_same_subject(workflow, stored, inputs)
        metadata = {} if resume or inputs is None else {"subject": subject_of(workflow, inputs)}
        return run_workflow(
            workflow,
            None if resume else inputs,
            context=context if isinstance(context, WorkflowContext) else context(),
            checkpointer=saver,
            thread_id=thread,
            resume=resume,
            approver=approver,
            on_event=on_event,
            max_concurrency=max_concurrency,
            metadata=metadata,
        )
