"""Run a chunk entry's items: complete the stored ones first, then run the others whole.

Items with a stored record to complete (validators failed after retries, or not asked yet: a
partial record) are completed first, asking only those validators
(:func:`multiagent.graphs.batch_chunks.complete_chunk`); the others then run whole
(:func:`multiagent.graphs.batch_chunks.run_chunk`), one validator call at a time. The entry's
outcome is one, merged (:func:`merge_outcomes`).

A chunk of a batch queued with ``--budget`` runs its items only once the batch's budget in Redis
(:class:`multiagent.models.budget_redis.RedisBudget`, one per batch and process) holds each
one's worst case, and their calls draw on those holds (:mod:`.worker_admission`); without it,
a chunk's calls reserve against the profile's run budget, in this process: a chunk is no
thread that another process resumes, so it has no budget of its own in Redis (that cost two
round trips per call and left four keys per chunk behind).
"""

from __future__ import annotations

import functools
from collections import deque
from collections.abc import Callable

from multiagent.distributed.entry_guard import EntryGuard
from multiagent.distributed.queue import Judging
from multiagent.distributed.worker_admission import admit_items
from multiagent.errors import BudgetExceededError
from multiagent.graphs.batch_budget import completing_worst_case
from multiagent.graphs.batch_chunk_outcome import ChunkOutcome
from multiagent.graphs.batch_chunks import complete_chunk, plan_chunks, run_chunk
from multiagent.graphs.batch_records import ItemRecord, asked_again
from multiagent.models.budget_redis import RedisBudget
from multiagent.models.ledger import RunLedger
from multiagent.nodes.context import WorkflowContext
from multiagent.nodes.state import ValidationItem

#: Runs a chunk's items: :func:`run_chunk`, or :func:`complete_chunk` with the stored records.
ChunkRun = Callable[..., ChunkOutcome]


def run_items(
    batch_id: str,
    chunk_id: str,
    todo: list[ValidationItem],
    records: dict[str, ItemRecord],
    judging: Judging,
    guard: EntryGuard,
    *,
    context: WorkflowContext,
    budget: RedisBudget | None,
) -> ChunkOutcome:
    """Complete the items of ``todo`` that have a record in ``records``, asking only their
    validators that failed or were not asked yet (:func:`complete_chunk`), then run the
    others whole (:func:`run_chunk`); the second part does not start once the first did
    not complete. Under the batch's budget each item is admitted at its worst case (an
    item being completed: its validators asked again); without one, the entry's calls
    reserve against the profile's run budget, both parts together."""
    name = f"{batch_id}:{chunk_id}"
    cap = context.ledger.budget_usd
    parts: list[tuple[ChunkRun, list[ValidationItem]]] = [
        (
            functools.partial(complete_chunk, records=records),
            [item for item in todo if item["id"] in records],
        ),
        (run_chunk, [item for item in todo if item["id"] not in records]),
    ]
    outcomes: list[ChunkOutcome] = []
    left: list[str] = []
    for run, items in parts:
        if not items:
            continue
        if outcomes and (outcomes[-1].status != "completed" or not guard.still_ours()):
            left.extend(item["id"] for item in items)
            continue
        if budget is None:
            spent = sum(outcome.spent_usd for outcome in outcomes)
            outcome = run(
                name, items, validators=judging.validators, threshold=judging.threshold,
                context=context,
                max_concurrency=1,  # one call per thread: --concurrency is calls in flight
                ledger=RunLedger(
                    budget_usd=None if cap is None else max(0.0, cap - spent), shared=guard
                ),
            )  # fmt: skip
        else:
            asked = asked_again(items, records)
            worst_case = completing_worst_case(context, judging.validators, asked)
            outcome = _admitted(
                name, items, judging, budget, guard, context=context, run=run,
                worst_case=worst_case,
            )  # fmt: skip
        outcomes.append(outcome)
    if len(outcomes) == 1 and not left:
        return outcomes[0]
    return merge_outcomes(name, outcomes, unfinished=left)


def _admitted(
    name: str,
    todo: list[ValidationItem],
    judging: Judging,
    budget: RedisBudget,
    guard: EntryGuard,
    *,
    context: WorkflowContext,
    run: ChunkRun,
    worst_case: Callable[[str], float],
) -> ChunkOutcome:
    """Run ``todo`` (with ``run``) under the batch's budget, each item only once Redis
    holds its worst case (:mod:`.worker_admission`): those admitted together run as one
    chunk, then the next; an item the budget refuses stops the chunk as
    ``budget_exceeded``, the items left unfinished."""
    groups = deque(plan_chunks(todo, chunk_size=1))
    outcomes: list[ChunkOutcome] = []
    while groups:
        try:
            held, items = admit_items(budget, groups, worst_case=worst_case)
        except BudgetExceededError as exc:
            outcomes.append(
                ChunkOutcome(
                    chunk_id=name, status="budget_exceeded", records=[], unfinished=[],
                    usage=[], ledger=RunLedger(), message=str(exc),
                    error="BudgetExceededError",
                )
            )  # fmt: skip
            break
        try:
            outcome = run(
                f"{name}:{len(outcomes)}", items, validators=judging.validators,
                threshold=judging.threshold, context=context, max_concurrency=1,
                ledger=RunLedger(shared=guard.wrapping(held)),
            )  # fmt: skip
        finally:
            held.close()
        outcomes.append(outcome)
        if outcome.status != "completed" or not guard.still_ours():
            break
    left = [item["id"] for group in groups for item in group]
    return merge_outcomes(name, outcomes, unfinished=left)


def merge_outcomes(
    chunk_id: str, outcomes: list[ChunkOutcome], *, unfinished: list[str]
) -> ChunkOutcome:
    """One outcome of an entry's chunks run in turn, with ``unfinished`` items never started:
    every record and call, the status (and why) of the first that did not complete, and the
    first error nobody expected that one raised."""
    ledger = RunLedger()
    for outcome in outcomes:
        ledger.absorb(outcome.ledger)
    stopped = next((o for o in outcomes if o.status != "completed"), None)
    return ChunkOutcome(
        chunk_id=chunk_id, status="completed" if stopped is None else stopped.status,
        records=[record for o in outcomes for record in o.records],
        unfinished=[item for o in outcomes for item in o.unfinished] + unfinished,
        usage=[entry for o in outcomes for entry in o.usage], ledger=ledger,
        message="" if stopped is None else stopped.message,
        error=None if stopped is None else stopped.error,
        seconds=sum(o.seconds for o in outcomes), spent_usd=sum(o.spent_usd for o in outcomes),
        raised=next((o.raised for o in outcomes if o.raised is not None), None),
    )  # fmt: skip
