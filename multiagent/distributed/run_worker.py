"""A worker's side of a queued run: run or resume its thread, store its report once.

While the run goes on its entry may be taken over by another worker (this one frozen past the
claim idle time): the run's calls and its checkpointer's writes ask first
(:mod:`.entry_guard`), so it stops at the next one, and leaves the thread and the result to the
new owner. What it paid for is in its thread's usage all the same (recorded there as any
interrupted run's), and kept as the run's (:func:`~multiagent.distributed.runs.keep_run_usage`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import redis

from multiagent.distributed.deadletter import run_key
from multiagent.distributed.entry_guard import EntryGuard, guarded_saver
from multiagent.distributed.runs import (
    FINAL,
    keep_run_usage,
    require_checkpoint_url,
    store_run_result,
)
from multiagent.nodes.context import WorkflowContext

#: The status of an attempt that stopped because another worker took its entry over.
TAKEN_OVER = "taken_over"


@dataclass(frozen=True)
class RunAttempt:
    """How one attempt at a queued run ended."""

    status: str
    stored: bool = False
    resumed: bool = False
    error: str = ""
    #: USD this attempt's calls cost (settled)
    spent_usd: float = 0.0

    @property
    def final(self) -> bool:
        """Whether the run is done (stored); else the attempt failed and may be retried."""
        return self.status in FINAL or self.status == "missing"


def execute_run(
    client: redis.Redis,
    run_id: str,
    *,
    context: WorkflowContext,
    consumer: str,
    guard: EntryGuard | None = None,
) -> RunAttempt:
    """Run (or resume from its last checkpoint) the thread of queued run ``run_id``.

    The thread lives in the context's checkpointer (PostgreSQL for queued runs): a thread that
    already has checkpoints was started by a worker that died, and is resumed, so its finished
    nodes are not run again. A report already stored means an earlier worker finished and died
    before acknowledging: nothing runs. With ``guard``, the run stops at its next model call or
    checkpoint write once the entry is another worker's (status :data:`TAKEN_OVER`: nothing
    stored, the run's state left to its new owner).
    """
    from multiagent.errors import UsageError
    from multiagent.graphs.report import outcome_report, thread_usage
    from multiagent.graphs.runner import run_workflow
    from multiagent.graphs.workflows import subject_of
    from multiagent.persistence.checkpointer import open_checkpointer
    from multiagent.persistence.run_usage import recorded_runs

    try:  # a worker without the shared checkpointer leaves the run to one that has it
        require_checkpoint_url(context.settings)
    except UsageError as exc:
        return RunAttempt(status="failed", error=str(exc))
    meta = client.hgetall(run_key(run_id))
    if not meta:
        return RunAttempt(status="missing", error=f"run {run_id} is not stored")
    if "result" in meta:
        return RunAttempt(status=str(meta.get("state", "completed")))
    workflow: Any = str(meta["workflow"])
    inputs = json.loads(meta["inputs"]) if "inputs" in meta else None
    client.hset(run_key(run_id), mapping={"state": "running", "worker": consumer})
    settings = context.settings
    with open_checkpointer(settings) as opened:
        saver = opened if guard is None else guarded_saver(opened, guard)
        found = saver.get_tuple({"configurable": {"thread_id": run_id}})
        resume = found is not None
        outcome = run_workflow(
            workflow,
            None if resume else inputs,
            context=context,
            checkpointer=saver,
            thread_id=run_id,
            resume=resume,
            max_concurrency=settings.profile.rate_limit.max_concurrency,
            metadata={} if resume or inputs is None else {"subject": subject_of(workflow, inputs)},
            guard_budget=None if guard is None else guard.wrapping,
        )
        spent = outcome.ledger.spent_usd
        if guard is not None and guard.taken_over and outcome.status not in FINAL:
            # its calls are recorded beside the thread now (as any interrupted run's): the
            # run's usage, if its new owner stored it before, is read again
            keep_run_usage(client, run_id, thread_usage(outcome))
            return RunAttempt(status=TAKEN_OVER, resumed=resume, spent_usd=spent)
        if outcome.status not in FINAL:
            client.hset(run_key(run_id), "state", "retrying")
            error = outcome.error or outcome.message or outcome.status
            return RunAttempt(
                status=outcome.status, resumed=resume, error=" ".join(error.split()),
                spent_usd=spent,
            )  # fmt: skip
        report = outcome_report(outcome)
        stored = store_run_result(client, run_id, report)
        # a worker taken over meanwhile may have recorded its calls after this report read the
        # thread's usage, and found no report to keep them in: read again once it is stored
        outcome.runs = recorded_runs(saver, run_id)
        keep_run_usage(client, run_id, thread_usage(outcome))
    return RunAttempt(status=outcome.status, stored=stored, resumed=resume, spent_usd=spent)
