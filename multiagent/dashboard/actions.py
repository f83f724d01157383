"""Resume and approve a thread from the dashboard: the run continues in the server's process.

An action starts the run on a background thread and returns at once; the run then shows on the
live page like any other (its recorder writes to the same live file), and its counts are written
to the metrics history when it ends, as a CLI run's are.
"""

from __future__ import annotations

import threading
from typing import Any, Literal

from multiagent.errors import UsageError
from multiagent.policies import Settings

Action = Literal["resume", "approve", "reject"]
_RUNNING: dict[str, threading.Thread] = {}
_LOCK = threading.Lock()


def _answer(action: Action, feedback: str) -> Any:
    if action == "resume":
        return None  # nobody answers: a waiting run stays waiting, an interrupted one goes on
    return {"approved": action == "approve", "feedback": feedback}


def _run(settings: Settings, workflow: Any, thread_id: str, action: Action, feedback: str) -> None:
    from multiagent.graphs.execute import execute_workflow
    from multiagent.models.pipeline import ModelPipeline
    from multiagent.nodes.agents_file import load_agents
    from multiagent.nodes.context import build_context
    from multiagent.observability.history import persist_metrics, unpersisted

    answer = _answer(action, feedback)
    try:
        execute_workflow(
            workflow,
            None,
            settings=settings,
            context=lambda: build_context(
                settings, agents=load_agents(settings), pipeline=ModelPipeline(settings)
            ),
            thread_id=thread_id,
            resume=True,
            approver=(lambda _payload: answer) if answer is not None else None,
        )
    finally:
        try:
            # the server's process has no exit of a run to persist at, and counts left in its
            # memory reach no other process and go with a restart of the server
            if unpersisted():
                persist_metrics(settings)
        finally:
            with _LOCK:
                _RUNNING.pop(thread_id, None)


def start_action(
    settings: Settings, *, thread_id: str, action: Action, feedback: str = ""
) -> dict[str, Any]:
    """Check the thread can take ``action`` and continue it in the background.

    Raises:
        UsageError: Unknown thread, not waiting for approval (approve, reject), finished
            (resume), or already being continued here.
    """
    from multiagent.dashboard.data import thread_detail

    state = thread_detail(settings, thread_id, None)["state"]
    status = state["status"]
    if action in ("approve", "reject") and status != "awaiting_approval":
        raise UsageError(f"thread {thread_id!r} is {status}, not awaiting approval")
    if action == "resume" and status in ("completed", "rejected"):
        raise UsageError(f"thread {thread_id!r} is {status}; there is nothing to resume")
    with _LOCK:
        if thread_id in _RUNNING:
            raise UsageError(f"thread {thread_id!r} is already being continued")
        worker = threading.Thread(
            target=_run,
            args=(settings, state["workflow"], thread_id, action, feedback),
            name=f"multiagent-dashboard-{action}",
            daemon=True,
        )
        _RUNNING[thread_id] = worker
    worker.start()
    return {"thread_id": thread_id, "action": action, "accepted": True, "was": status}
