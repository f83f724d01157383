"""A worker's side of a queued run: run or resume its thread, store its report once."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import redis

from multiagent.distributed.deadletter import run_key
from multiagent.distributed.runs import FINAL, require_checkpoint_url, store_run_result
from multiagent.nodes.context import WorkflowContext


@dataclass(frozen=True)
class RunAttempt:
    """How one attempt at a queued run ended."""

    status: str
    stored: bool = False
    resumed: bool = False
    error: str = ""

    @property
    def final(self) -> bool:
        """Whether the run is done (stored); else the attempt failed and may be retried."""
        return self.status in FINAL or self.status == "missing"


def execute_run(
    client: redis.Redis, run_id: str, *, context: WorkflowContext, consumer: str
) -> RunAttempt:
    """Run (or resume from its last checkpoint) the thread of queued run ``run_id``.

    The thread lives in the context's checkpointer (PostgreSQL for queued runs): a thread that
    already has checkpoints was started by a worker that died, and is resumed, so its finished
    nodes are not run again. A report already stored means an earlier worker finished and died
    before acknowledging: nothing runs.
    """
    from multiagent.errors import UsageError
    from multiagent.graphs.report import outcome_report
    from multiagent.graphs.runner import run_workflow
    from multiagent.graphs.workflows import subject_of
    from multiagent.persistence.checkpointer import open_checkpointer

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
    with open_checkpointer(settings) as saver:
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
        )
    if outcome.status not in FINAL:
        client.hset(run_key(run_id), "state", "retrying")
        error = outcome.error or outcome.message or outcome.status
        return RunAttempt(status=outcome.status, resumed=resume, error=" ".join(error.split()))
    report = outcome_report(outcome)
    stored = store_run_result(client, run_id, report)
    return RunAttempt(status=outcome.status, stored=stored, resumed=resume)
