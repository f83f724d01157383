"""How a workflow run ended: its status, the thread's values then, and what it spent.

:func:`~multiagent.graphs.runner.run_workflow` returns a :class:`WorkflowOutcome`; a batch's
chunks (:mod:`multiagent.graphs.batch_chunk_outcome`) read theirs, and the terminal and
``--json`` (:mod:`multiagent.graphs.report`) show it. Kept apart from the runner so that those
readers do not import the run itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from multiagent.graphs.workflows import Workflow
from multiagent.models.pipeline import RunLedger

Status = Literal[
    "completed", "rejected", "awaiting_approval", "budget_exceeded", "failed", "interrupted"
]


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
