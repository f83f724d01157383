"""What a queue worker's slot does with one entry: run a batch chunk, or a queued run.

A chunk runs through the validation graph one validator call at a time
(:func:`multiagent.graphs.batch_chunks.run_chunk` with ``max_concurrency=1``); its result goes to
the storer (:mod:`.worker_store`), which stores and acknowledges it. Items already stored (a
reclaimed entry) are not run again; a batch stopped on its budget is acknowledged unrun. An
entry a resume queued to *complete* stored items (``complete``, see
:mod:`.queue_resume`) asks only their validators that failed again, keeping the verdicts given
(:func:`multiagent.graphs.batch_chunks.complete_chunk`, the single run's rule), and its records
replace those they complete; an item complete meanwhile is not run.

A chunk that stops mid-way (its budget, an error) keeps what it paid for, as a local batch's
does: an item some of whose validators answered while the others were not asked yet is stored
as a *partial* record (``batch:{ID}:partial``, never counted as finished). The entry's retry,
or the entry a resume queues for the item, completes it as an incomplete item is completed,
asking only the validators not asked yet, before running its other items whole; no verdict
is bought twice. A chunk whose run raised an error nobody expected (a bug in a node) keeps
what it paid for the same way (:attr:`~multiagent.graphs.batch_chunk_outcome.ChunkOutcome.
raised`): its records are stored at once, the entry left pending, and the error is raised to
the slot, which counts the failed attempt (retried, dead-lettered at ``max_attempts``) and says
it as it says any error nobody expected.

A chunk of a batch queued with ``--budget`` runs its items only once the batch's budget in Redis
(:class:`multiagent.models.budget_redis.RedisBudget`, one per batch and process) holds each
one's worst case, and their calls draw on those holds (:mod:`.worker_admission`); without it,
a chunk's calls reserve against the profile's run budget, in this process: a chunk is no
thread that another process resumes, so it has no budget of its own in Redis (that cost two
round trips per call and left four keys per chunk behind).

Before each model call of a chunk or a queued run its ledger asks whether the entry is still
this worker's (:mod:`.entry_guard`); a queued run's checkpointer asks before each write too. A
worker frozen (SIGSTOP, a long pause) past the claim idle time finds, once resumed, that another
worker took the entry over and runs it, and stops there, storing no records and no result,
writing nothing to the thread and paying for no more calls (counted as ``taken_over``). What
it paid for already (the calls in flight when it froze, which the provider served) is kept as
spend all the same: a chunk's in the batch's usage, as any attempt's
(:func:`~multiagent.distributed.deadletter.finish_chunks`, nothing stored or acknowledged
beside it), a run's under the run (:func:`~multiagent.distributed.runs.keep_run_usage`),
so a batch's or a run's spend never leaves out what was paid.
"""

from __future__ import annotations

import contextlib
import functools
import json
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from typing import Any

import redis
from redis.exceptions import RedisError

from multiagent.distributed.deadletter import (
    FinishedChunk,
    acknowledge,
    count_done,
    finish_chunks,
    record_failure,
)
from multiagent.distributed.entry_guard import EntryGuard
from multiagent.distributed.queue import Judging, batch_key, load_judging, stream_key
from multiagent.distributed.worker_admission import admit_items
from multiagent.distributed.worker_feed import claim_own
from multiagent.distributed.worker_state import (
    EndedChunk,
    EntryCheck,
    WorkerState,
    ask_entry_state,
    entry_check,
)
from multiagent.distributed.worker_store import store_now
from multiagent.errors import BudgetExceededError
from multiagent.graphs.batch_budget import completing_worst_case
from multiagent.graphs.batch_chunk_outcome import ChunkOutcome
from multiagent.graphs.batch_chunks import complete_chunk, plan_chunks, run_chunk
from multiagent.graphs.batch_records import ItemRecord, asked_again
from multiagent.models.budget_redis import RedisBudget, budget_key, to_nano
from multiagent.models.ledger import RunLedger
from multiagent.nodes.context import WorkflowContext
from multiagent.nodes.state import ValidationItem

#: Runs a chunk's items: :func:`run_chunk`, or :func:`complete_chunk` with the stored records.
ChunkRun = Callable[..., ChunkOutcome]


class EntryRunner:
    """Runs taken entries for one worker; ended chunks go to ``state.ended``."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        queue: str,
        consumer: str,
        context: WorkflowContext,
        state: WorkerState,
        max_attempts: int,
        claim_idle_ms: int,
    ) -> None:
        self.client = client
        self.queue = queue
        self.consumer = consumer
        self.context = context
        self.state = state
        self.max_attempts = max_attempts
        self.claim_idle_ms = claim_idle_ms
        self._judging: dict[str, Judging] = {}
        self._budgets: dict[str, RedisBudget | None] = {}
        self._lock = threading.Lock()  # the caches above, filled by any slot
        self._judging_lock = threading.Lock()  # one slot reads a new batch's; the others wait

    def chunk(self, entry_id: str, fields: dict[str, Any], *, reclaimed: bool) -> None:
        """Run a chunk entry's unfinished items and hand the outcome to the storer."""
        state = self.state
        batch_id, chunk_id = str(fields.get("batch", "")), str(fields.get("chunk", ""))
        judging = self._judging_of(batch_id)
        items = json.loads(fields.get("items", "[]"))
        completing = fields.get("complete") == "1"
        todo = []
        # the stored records of items to complete (validators failed, or not asked yet)
        records: dict[str, ItemRecord] = {}
        if judging is not None:
            with state.lock:  # an entry completing items reads their records when it runs
                checked = None if completing else state.checked.get(entry_id)
            if completing:
                skip, records = self._stored(batch_id, fields, items)
                done = {item["id"] for item in items if item["id"] not in records}
            else:
                ids = [i["id"] for i in items]
                check = checked or self._batch_state(batch_id, fields, ids)
                skip, done, records = check.skip, check.done, check.partial
            # the batch's budget ran out: its remaining items stay unfinished (until a resume
            # queues them again, in new entries: this one is then skipped as well)
            if skip:
                judging = None
                state.stats.add(skipped=len(items))
                items = []
            todo = [item for item in items if item["id"] not in done]
        state.stats.add(reclaimed=int(reclaimed), duplicates=len(items) - len(todo))
        if judging is None or not todo:
            acknowledge(self.client, self.queue, entry_id)
            return
        guard = EntryGuard(lambda: self.still_ours(entry_id))
        outcome = self._run_items(batch_id, chunk_id, todo, records, judging, guard)
        if not guard.still_ours():  # another worker runs it: its records are that one's
            self._keep_paid(entry_id, batch_id, chunk_id, outcome)
            if outcome.raised is not None:
                raise outcome.raised
            return
        if outcome.status == "budget_exceeded":  # at once: the next chunks are not started
            self.client.hset(
                batch_key(batch_id),
                mapping={"stopped": "budget_exceeded", "last_error": outcome.message},
            )
        # unfinished items (no validator answered, or some not asked yet) leave the entry
        # pending for its retry, as an error nobody expected does; a batch out of budget is
        # acknowledged: no worker could finish it
        retry = outcome.raised is not None or (
            bool(outcome.unfinished) and outcome.status != "budget_exceeded"
        )
        # a partial record (validators not asked yet) is kept apart: the entry's retry, or a
        # resume's, asks only the validators not asked
        finished = FinishedChunk(
            entry_id=entry_id, batch_id=batch_id, chunk_id=chunk_id,
            records=[_pair(r) for r in outcome.records if not r.partial],
            partial=[_pair(r) for r in outcome.records if r.partial],
            usage_json=json.dumps(outcome.usage), ack=not retry, attempt=uuid.uuid4().hex[:12],
            replace=completing,
        )  # fmt: skip
        if outcome.raised is not None:
            # stored before the slot counts the failed attempt; Redis not answering loses
            # only what the retry runs again, as before, and the error is said all the same
            with contextlib.suppress(RedisError):
                store_now(self.client, self.queue, EndedChunk(finished, fields, outcome, None),
                          state=state)  # fmt: skip
            raise outcome.raised
        failure = (outcome.error or outcome.message or outcome.status) if retry else None
        with state.lock:
            state.storing.add(entry_id)
        state.ended.put(EndedChunk(finished, fields, outcome, failure))

    def _run_items(
        self,
        batch_id: str,
        chunk_id: str,
        todo: list[ValidationItem],
        records: dict[str, ItemRecord],
        judging: Judging,
        guard: EntryGuard,
    ) -> ChunkOutcome:
        """Complete the items of ``todo`` that have a record in ``records``, asking only their
        validators that failed or were not asked yet (:func:`complete_chunk`), then run the
        others whole (:func:`run_chunk`); the second part does not start once the first did
        not complete. Under the batch's budget each item is admitted at its worst case (an
        item being completed: its validators asked again); without one, the entry's calls
        reserve against the profile's run budget, both parts together."""
        name, budget = f"{batch_id}:{chunk_id}", self._budget(batch_id)
        cap = self.context.ledger.budget_usd
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
                    context=self.context,
                    max_concurrency=1,  # one call per thread: --concurrency is calls in flight
                    ledger=RunLedger(
                        budget_usd=None if cap is None else max(0.0, cap - spent), shared=guard
                    ),
                )  # fmt: skip
            else:
                asked = asked_again(items, records)
                worst_case = completing_worst_case(self.context, judging.validators, asked)
                outcome = self._admitted(
                    name, items, judging, budget, guard, run=run, worst_case=worst_case
                )
            outcomes.append(outcome)
        if len(outcomes) == 1 and not left:
            return outcomes[0]
        return merge_outcomes(name, outcomes, unfinished=left)

    def _admitted(
        self,
        name: str,
        todo: list[ValidationItem],
        judging: Judging,
        budget: RedisBudget,
        guard: EntryGuard,
        *,
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
                    threshold=judging.threshold, context=self.context, max_concurrency=1,
                    ledger=RunLedger(shared=guard.wrapping(held)),
                )  # fmt: skip
            finally:
                held.close()
            outcomes.append(outcome)
            if outcome.status != "completed" or not guard.still_ours():
                break
        left = [item["id"] for group in groups for item in group]
        return merge_outcomes(name, outcomes, unfinished=left)

    def _keep_paid(
        self, entry_id: str, batch_id: str, chunk_id: str, outcome: ChunkOutcome
    ) -> None:
        """A chunk taken over: no record is stored, the entry is its new owner's to
        acknowledge; but its calls were paid (the one in flight as the worker froze), so their
        usage joins the batch's as an attempt of its own, named so."""
        spent = sum(to_nano(call.cost_usd) for call in outcome.ledger.records())
        self.state.stats.add(taken_over=1, spent_nano=spent, taken_over_nano=spent)
        if not outcome.usage:
            return
        paid = FinishedChunk(
            entry_id=entry_id, batch_id=batch_id, chunk_id=chunk_id, records=[],
            usage_json=json.dumps(outcome.usage), ack=False,
            attempt=f"taken-over-{uuid.uuid4().hex[:12]}",
        )  # fmt: skip
        finish_chunks(self.client, self.queue, [paid])

    def still_ours(self, entry_id: str) -> bool:
        """Whether ``entry_id`` is still this worker's: yes when it was known so (taken, or kept
        fresh by the heartbeat) less than half the claim idle time ago, no other worker may
        take it yet; else it is asked, and kept fresh if so (:func:`claim_own`, one round
        trip). Another worker took it over if this one was frozen meanwhile."""
        state = self.state
        with state.lock:
            since = state.confirmed.get(entry_id)
        if since is not None and time.monotonic() - since < self.claim_idle_ms / 2000:
            return True
        asked = time.monotonic()
        if not claim_own(self.client, stream_key(self.queue), self.consumer, [entry_id]):
            return False
        with state.lock:
            state.confirm([entry_id], at=asked)
        return True

    def run(self, entry_id: str, fields: dict[str, Any], *, reclaimed: bool) -> None:
        """Run or resume a queued run's thread, store its result once, acknowledge it."""
        from multiagent.distributed.run_worker import TAKEN_OVER, execute_run

        run_id = str(fields.get("run", ""))
        attempt = execute_run(
            self.client, run_id, context=self.context, consumer=self.consumer,
            guard=EntryGuard(lambda: self.still_ours(entry_id)),
        )  # fmt: skip
        self.state.stats.add(reclaimed=int(reclaimed), resumed=int(attempt.resumed))
        if attempt.status == TAKEN_OVER:  # its new owner ends it: nothing stored, no ack
            self.state.stats.add(taken_over=1, taken_over_nano=to_nano(attempt.spent_usd))
            return
        if not attempt.final and self.state.abandoned.is_set():
            return  # cut short by a stop now, not failed: left pending for another worker
        if not attempt.final:
            self.failed(entry_id, fields, error=attempt.error, unfinished=[])
            return
        if attempt.stored:
            self.state.stats.add(runs=1)
            count_done(self.client, self.queue, 1)
        acknowledge(self.client, self.queue, entry_id)

    def failed(
        self, entry_id: str, fields: dict[str, Any], *, error: str, unfinished: list[str]
    ) -> int:
        """Count the failure; at ``max_attempts`` the entry goes to the dead letters. Returns
        the failed attempt's number."""
        attempt = record_failure(
            self.client, self.queue, entry_id, fields, error=" ".join(str(error).split()),
            unfinished=unfinished, max_attempts=self.max_attempts,
        )  # fmt: skip
        self.state.stats.add(failures=1, dead_letters=int(attempt >= self.max_attempts))
        return attempt

    def flush(self) -> None:
        """Send the batch budgets' settlements still kept (the worker is stopping)."""
        with self._lock:
            budgets = [budget for budget in self._budgets.values() if budget is not None]
        for budget in budgets:
            budget.reconcile()

    def _judging_of(self, batch_id: str) -> Judging | None:
        """How ``batch_id`` is judged, read once per process (``None``: no such batch yet)."""
        found = self._judging.get(batch_id)
        if found is not None:
            return found
        with self._judging_lock:
            found = self._judging.get(batch_id)
            if found is None:
                found = load_judging(self.client, batch_id)
                if found is not None:  # an absent batch may be enqueued yet: asked again
                    self._judging[batch_id] = found
        return found

    def _budget(self, batch_id: str) -> RedisBudget | None:
        """The batch's shared budget, when it was queued with one."""
        with self._lock:
            if batch_id in self._budgets:
                return self._budgets[batch_id]
        budget = None
        if self.client.hexists(batch_key(batch_id), "budget_usd"):
            config = self.context.settings.profile.budget
            budget = RedisBudget(
                self.client, key=budget_key("batch", batch_id), cap_usd=None,
                lease_s=config.lease_s, degraded_fraction=config.degraded_fraction,
                label="batch budget",
            )  # fmt: skip
        with self._lock:
            return self._budgets.setdefault(batch_id, budget)

    def _stored(
        self, batch_id: str, fields: dict[str, Any], items: list[ValidationItem]
    ) -> tuple[bool, dict[str, ItemRecord]]:
        """Whether the entry is not to run (as :meth:`_batch_state`), and the records of its
        items still to complete: incomplete (validators failed after retries, no verdict
        since), or partial (validators not asked yet); one round trip."""
        ids = [item["id"] for item in items]
        with self.client.pipeline(transaction=False) as pipe:
            ask_entry_state(pipe, batch_id, ids)
            replies = pipe.execute()
        check = entry_check(fields, ids, replies)
        records = {}
        for item, text in zip(items, replies[1], strict=False):  # the finished records
            record = check.partial.get(item["id"])
            if text is not None:  # finished: its partial record, if any, is gone
                record = ItemRecord.from_dict(json.loads(str(text)))
            if record is not None and record.failed_validators(item):
                records[item["id"]] = record
        return check.skip, records

    def _batch_state(self, batch_id: str, fields: dict[str, Any], ids: list[str]) -> EntryCheck:
        """Whether the entry is not to run (its batch stopped, or a resume queued its items
        again), which of ``ids`` are stored, and which kept partial: one round trip."""
        with self.client.pipeline(transaction=False) as pipe:
            ask_entry_state(pipe, batch_id, ids)
            replies = pipe.execute()
        return entry_check(fields, ids, replies)


def _pair(record: ItemRecord) -> tuple[str, str]:
    """``(item id, record JSON)``: how the storer sends a record."""
    return record.result["id"], json.dumps(record.as_dict())


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
