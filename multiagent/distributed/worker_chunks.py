"""What a queue worker's slot does with one entry: run a batch chunk, or a queued run.

A chunk runs through the validation graph one validator call at a time
(:func:`multiagent.graphs.batch_chunks.run_chunk` with ``max_concurrency=1``); its result goes to
the storer (:mod:`.worker_store`), which stores and acknowledges it. Items already stored (a
reclaimed entry) are not run again; a batch stopped on its budget is acknowledged unrun. An
entry a resume queued to *complete* stored items (``complete``, see
:mod:`.queue_resume`) asks only their validators that failed again, keeping the verdicts given
(:func:`multiagent.graphs.batch_chunks.complete_chunk`, the single run's rule), and its records
replace those they complete; an item complete meanwhile is not run. How an entry's items run,
completed first, then whole, under the batch's budget if it has one, is :mod:`.worker_items`.

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
import json
import threading
import time
import uuid
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
from multiagent.distributed.worker_feed import claim_own
from multiagent.distributed.worker_items import run_items
from multiagent.distributed.worker_state import (
    EndedChunk,
    WorkerState,
    read_entry_check,
    records_to_complete,
)
from multiagent.distributed.worker_store import count_lost, store_now
from multiagent.graphs.batch_chunk_outcome import ChunkOutcome
from multiagent.graphs.batch_records import ItemRecord
from multiagent.models.budget_redis import RedisBudget, budget_key, to_nano
from multiagent.nodes.context import WorkflowContext


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
        if judging is None:  # the batch is gone from Redis: no worker can finish its items
            count_lost(state, batch_id, chunk_id, len({item["id"] for item in items}), "run")
            state.stats.add(reclaimed=int(reclaimed))
            acknowledge(self.client, self.queue, entry_id)
            return
        completing = fields.get("complete") == "1"
        with state.lock:  # an entry completing items reads their records when it runs
            checked = None if completing else state.checked.get(entry_id)
        # the stored records of items to complete (validators failed, or not asked yet)
        records: dict[str, ItemRecord]
        if completing:
            skip, records = records_to_complete(self.client, batch_id, fields, items)
            done = {item["id"] for item in items if item["id"] not in records}
        else:
            ids = [i["id"] for i in items]
            check = checked or read_entry_check(self.client, batch_id, fields, ids)
            skip, done, records = check.skip, check.done, check.partial
        # the batch's budget ran out: its remaining items stay unfinished (until a resume
        # queues them again, in new entries: this one is then skipped as well)
        if skip:
            state.stats.add(skipped=len(items))
            items = []
        todo = [item for item in items if item["id"] not in done]
        state.stats.add(reclaimed=int(reclaimed), duplicates=len(items) - len(todo))
        if not todo:
            acknowledge(self.client, self.queue, entry_id)
            return
        guard = EntryGuard(lambda: self.still_ours(entry_id))
        outcome = run_items(
            batch_id, chunk_id, todo, records, judging, guard, context=self.context,
            budget=self._budget(batch_id),
        )  # fmt: skip
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


def _pair(record: ItemRecord) -> tuple[str, str]:
    """``(item id, record JSON)``: how the storer sends a record."""
    return record.result["id"], json.dumps(record.as_dict())
