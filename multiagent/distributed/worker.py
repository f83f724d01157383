"""``multiagent worker``: read a queue as a consumer group; validate chunks, run orchestrations.

Each of ``concurrency`` threads takes one stream entry at a time: first an entry another worker
left pending for longer than ``claim_idle_s`` (``XAUTOCLAIM``: that worker died, or the entry
failed and waits for its retry), else a new one (``XREADGROUP``). A chunk of a batch runs through
the validation graph one validator call at a time
(:func:`multiagent.graphs.batch_chunks.run_chunk` with ``max_concurrency=1``), so
``concurrency`` is the number of validator calls this process has in flight. A queued run
(``kind=run``) takes one thread and runs or resumes its thread in the shared checkpointer
(:func:`multiagent.distributed.run_worker.execute_run`), its agents in parallel as the profile
allows. The worker stores the result once and acknowledges the entry in the same script
(:func:`multiagent.distributed.deadletter.finish_chunk`; a run:
:func:`multiagent.distributed.runs.store_run_result`, then the acknowledgement).

While an entry runs, a heartbeat re-claims it for this worker every third of ``claim_idle_s``,
so slow work on a live worker is never taken over; a killed worker stops beating and its entries
pass to the others. An entry whose work failed (provider outage) is not acknowledged: it is
retried once its idle time has passed, up to ``max_attempts`` failures, then dead-lettered
(:mod:`multiagent.distributed.deadletter`). An entry whose worker is killed on every attempt
is dead-lettered by its delivery count: reclaimed after more than ``max_attempts`` deliveries.

Round trips per chunk: one read (``XREADGROUP``; ``XAUTOCLAIM`` only a few times per
``claim_idle_s`` and when idle), one pipelined check (stopped? already stored?), one script
that stores and acknowledges; the model calls' own Redis work (limiter, budget) is per call.

A batch queued with ``--budget`` has one budget in Redis (:mod:`multiagent.models.budget_redis`)
that every worker's calls reserve against and settle into, so N workers together never pass it.
A chunk refused by that budget marks the batch ``budget_exceeded`` and is acknowledged with its
items unfinished; later chunks of the batch are acknowledged without running.

Stopping: :meth:`QueueWorker.stop` (SIGTERM, Ctrl-C) lets the running entries finish and store,
then returns; a process that is killed instead leaves its entries pending for the others.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import redis
from redis.exceptions import RedisError

from multiagent.distributed.deadletter import (
    DEFAULT_MAX_ATTEMPTS,
    acknowledge,
    bury_redelivered,
    count_done,
    finish_chunk,
    record_failure,
    times_delivered,
)
from multiagent.distributed.queue import (
    GROUP,
    batch_key,
    ensure_group,
    finished_of,
    load_manifest,
    stream_key,
)
from multiagent.errors import MultiagentError
from multiagent.graphs.batch_chunks import run_chunk
from multiagent.graphs.batch_store import BatchManifest
from multiagent.models.budget_redis import RedisBudget, budget_key, to_nano
from multiagent.models.ledger import RunLedger
from multiagent.nodes.context import WorkflowContext

#: How long a read blocks waiting for new entries; also how soon a stop is noticed when idle.
READ_BLOCK_MS = 500


@dataclass
class WorkerStats:
    """What one worker did."""

    chunks: int = 0
    stored: int = 0
    duplicates: int = 0
    reclaimed: int = 0
    unfinished: int = 0
    skipped: int = 0  # items of batches stopped on their budget, acknowledged unrun
    spent_nano: int = 0  # settled by this worker's calls, in nano-USD (exact sums)
    runs: int = 0
    resumed: int = 0
    failures: int = 0
    dead_letters: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, **counts: int) -> None:
        """Add to the counters (from any thread)."""
        with self._lock:
            for name, value in counts.items():
                setattr(self, name, getattr(self, name) + value)

    def as_dict(self) -> dict[str, int]:
        """JSON-ready counters."""
        names = ("chunks", "stored", "duplicates", "reclaimed", "unfinished", "runs", "resumed")
        return {k: getattr(self, k) for k in (*names, "failures", "dead_letters", "skipped")} | {
            "spent_usd": self.spent_nano / 1_000_000_000
        }


class QueueWorker:
    """One worker process's threads on one queue (see the module docstring)."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        queue: str,
        context: WorkflowContext,
        concurrency: int = 1,
        claim_idle_s: float = 60.0,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        consumer: str | None = None,
    ) -> None:
        self.client = client
        self.queue = queue
        self.stream = stream_key(queue)
        self.context = context
        self.concurrency = concurrency
        self.claim_idle_ms = max(1, int(claim_idle_s * 1000))
        self.max_attempts = max_attempts
        self.consumer = consumer or f"{socket.gethostname()}:{os.getpid()}"
        self.stats = WorkerStats()
        self._stop = threading.Event()
        self._done = threading.Event()  # every thread has returned: the heartbeat ends
        self._in_flight: set[str] = set()
        self._lock = threading.Lock()
        self._manifests: dict[str, BatchManifest] = {}
        self._budgets: dict[str, RedisBudget | None] = {}
        self._next_claim = 0.0  # monotonic time of the next look for abandoned entries

    def stop(self) -> None:
        """Take no new entries; the running chunks finish and are stored."""
        self._stop.set()

    def run(self, *, idle_exit_s: float | None = None) -> WorkerStats:
        """Work until :meth:`stop` (or, with ``idle_exit_s``, until the queue stays empty)."""
        ensure_group(self.client, self.queue)
        # registered at once (an idle worker is visible to `metrics` and to the others)
        self.client.xgroup_createconsumer(self.stream, GROUP, self.consumer)
        self._idle_exit_ms = None if idle_exit_s is None else int(idle_exit_s * 1000)
        threads = [
            threading.Thread(target=self._loop, name=f"worker-{n}", daemon=True)
            for n in range(self.concurrency)
        ]
        beat = threading.Thread(target=self._heartbeat, name="worker-heartbeat", daemon=True)
        for thread in [*threads, beat]:
            thread.start()
        for thread in threads:
            while thread.is_alive():
                thread.join(timeout=0.2)  # short joins: signal handlers run in between
        self._stop.set()
        self._done.set()
        beat.join()
        with contextlib.suppress(RedisError):  # a clean stop leaves no consumer behind
            if not self._holds_entries():
                self.client.xgroup_delconsumer(self.stream, GROUP, self.consumer)
        return self.stats

    def _holds_entries(self) -> bool:
        held: Any = self.client.xpending_range(
            self.stream, GROUP, min="-", max="+", count=1, consumername=self.consumer
        )
        return bool(held)

    def _next_entry(self) -> tuple[str, dict[str, str], bool] | None:
        """An abandoned entry (claimed from a dead worker) or a new one; ``None`` if idle."""
        while self._claim_due():
            claimed: Any = self.client.xautoclaim(
                self.stream, GROUP, self.consumer, self.claim_idle_ms, start_id="0-0", count=1
            )
            if not claimed[1]:
                self._claim_later()
                break
            entry_id, fields = claimed[1][0]
            entry_id = str(entry_id)
            if not fields:  # an entry deleted meanwhile comes back without fields
                continue
            if not self._buried(entry_id, dict(fields)):
                return entry_id, dict(fields), True
        replies: Any = self.client.xreadgroup(
            GROUP, self.consumer, {self.stream: ">"}, count=1, block=READ_BLOCK_MS
        )
        for _stream, entries in replies or []:
            for entry_id, fields in entries:
                return str(entry_id), dict(fields), False
        self._claim_now()  # idle: look for abandoned entries at once
        return None

    # Looking for abandoned entries costs a round trip; an entry becomes abandoned only after
    # claim_idle_s, so the process looks a few times per claim_idle_s (and whenever idle), and
    # keeps claiming while it finds some, instead of once per entry on every thread.
    def _claim_due(self) -> bool:
        with self._lock:
            return time.monotonic() >= self._next_claim

    def _claim_later(self) -> None:
        with self._lock:
            self._next_claim = time.monotonic() + self.claim_idle_ms / 4000

    def _claim_now(self) -> None:
        with self._lock:
            self._next_claim = 0.0

    def _buried(self, entry_id: str, fields: dict[str, str]) -> bool:
        """Dead-letter a reclaimed entry delivered more than ``max_attempts`` times."""
        delivered = times_delivered(self.client, self.queue, entry_id)
        if delivered <= self.max_attempts:
            return False
        unfinished: list[str] = []
        if fields.get("kind") != "run":
            ids = [item["id"] for item in json.loads(fields.get("items", "[]"))]
            done = finished_of(self.client, str(fields.get("batch", "")), ids)
            unfinished = [item for item in ids if item not in done]
        bury_redelivered(
            self.client, self.queue, entry_id, fields, delivered=delivered,
            unfinished=unfinished, max_attempts=self.max_attempts,
        )  # fmt: skip
        self.stats.add(dead_letters=1)
        return True

    def _loop(self) -> None:
        idle_ms = 0
        while not self._stop.is_set():
            try:
                entry = self._next_entry()
            except RedisError as exc:
                print(f"worker: Redis error, retrying: {exc}", file=sys.stderr, flush=True)
                self._stop.wait(1.0)
                continue
            if entry is None:
                idle_ms += READ_BLOCK_MS
                if self._idle_exit_ms is not None and idle_ms >= self._idle_exit_ms:
                    return
                continue
            idle_ms = 0
            entry_id, fields, reclaimed = entry
            with self._lock:
                self._in_flight.add(entry_id)
            try:
                if fields.get("kind") == "run":
                    self._process_run(entry_id, fields, reclaimed=reclaimed)
                else:
                    self._process(entry_id, fields, reclaimed=reclaimed)
            except RedisError as exc:  # left pending: retried after the idle time
                print(f"worker: Redis error on {entry_id}: {exc}", file=sys.stderr, flush=True)
            finally:
                with self._lock:
                    self._in_flight.discard(entry_id)

    def _manifest(self, batch_id: str) -> BatchManifest | None:
        if batch_id not in self._manifests:
            try:
                self._manifests[batch_id] = load_manifest(self.client, batch_id)
            except MultiagentError:
                return None
        return self._manifests[batch_id]

    def _budget(self, batch_id: str) -> RedisBudget | None:
        """The batch's shared budget, when it was queued with one."""
        if batch_id not in self._budgets:
            budget = None
            if self.client.hexists(batch_key(batch_id), "budget_usd"):
                config = self.context.settings.profile.budget
                budget = RedisBudget(
                    self.client, key=budget_key("batch", batch_id), cap_usd=None,
                    lease_s=config.lease_s, degraded_fraction=config.degraded_fraction,
                    label="batch budget",
                )  # fmt: skip
            self._budgets[batch_id] = budget
        return self._budgets[batch_id]

    def _process(self, entry_id: str, fields: dict[str, Any], *, reclaimed: bool) -> None:
        batch_id, chunk_id = str(fields.get("batch", "")), str(fields.get("chunk", ""))
        manifest = self._manifest(batch_id)
        items = json.loads(fields.get("items", "[]"))
        todo = []
        if manifest is not None:
            stopped, done = self._batch_state(batch_id, [item["id"] for item in items])
            if stopped:  # the batch's budget ran out: its remaining items stay unfinished
                manifest = None
                self.stats.add(skipped=len(items))
                items = []
            todo = [item for item in items if item["id"] not in done]
        self.stats.add(reclaimed=int(reclaimed), duplicates=len(items) - len(todo))
        if manifest is None or not todo:
            acknowledge(self.client, self.queue, entry_id)
            return
        budget = self._budget(batch_id)
        outcome = run_chunk(
            f"{batch_id}:{chunk_id}", todo, validators=manifest.validators,
            threshold=manifest.threshold, context=self.context,
            max_concurrency=1,  # one call per thread: --concurrency is calls in flight
            ledger=None if budget is None else RunLedger(shared=budget),
        )  # fmt: skip
        # unfinished items (no validator answered) leave the entry pending for its retry;
        # a batch out of budget is acknowledged: no worker could finish it
        retry = bool(outcome.unfinished) and outcome.status != "budget_exceeded"
        records = [(r.result["id"], json.dumps(r.as_dict())) for r in outcome.records]
        new = finish_chunk(
            self.client, self.queue, entry_id, batch_id=batch_id, chunk_id=chunk_id,
            records=records, usage_json=json.dumps(outcome.usage), ack=not retry,
        )  # fmt: skip
        spent = sum(to_nano(call.cost_usd) for call in outcome.ledger.records())
        self.stats.add(chunks=1, stored=new, unfinished=len(outcome.unfinished), spent_nano=spent)
        if outcome.status == "budget_exceeded":
            self.client.hset(
                batch_key(batch_id),
                mapping={"stopped": "budget_exceeded", "last_error": outcome.message},
            )
        elif retry:
            error = outcome.error or outcome.message or outcome.status
            self._failed(entry_id, fields, error=error, unfinished=outcome.unfinished)

    def _batch_state(self, batch_id: str, ids: list[str]) -> tuple[bool, set[str]]:
        """Whether the batch was stopped, and which of ``ids`` are stored: one round trip."""
        with self.client.pipeline(transaction=False) as pipe:
            pipe.hget(batch_key(batch_id), "stopped")
            pipe.hmget(batch_key(batch_id, "records"), ids)
            stopped, found = pipe.execute()
        return bool(stopped), {i for i, value in zip(ids, found, strict=True) if value is not None}

    def _process_run(self, entry_id: str, fields: dict[str, Any], *, reclaimed: bool) -> None:
        from multiagent.distributed.run_worker import execute_run

        run_id = str(fields.get("run", ""))
        attempt = execute_run(self.client, run_id, context=self.context, consumer=self.consumer)
        self.stats.add(reclaimed=int(reclaimed), resumed=int(attempt.resumed))
        if not attempt.final:
            self._failed(entry_id, fields, error=attempt.error, unfinished=[])
            return
        if attempt.stored:
            self.stats.add(runs=1)
            count_done(self.client, self.queue, 1)
        acknowledge(self.client, self.queue, entry_id)

    def _failed(
        self, entry_id: str, fields: dict[str, Any], *, error: str, unfinished: list[str]
    ) -> None:
        """Count the failure; at ``max_attempts`` the entry goes to the dead letters."""
        dead = record_failure(
            self.client, self.queue, entry_id, fields, error=" ".join(str(error).split()),
            unfinished=unfinished, max_attempts=self.max_attempts,
        )  # fmt: skip
        self.stats.add(failures=1, dead_letters=int(dead))

    def _heartbeat(self) -> None:
        """Keep this worker's running entries fresh, so nobody takes them over."""
        interval = self.claim_idle_ms / 3000
        while not self._done.wait(interval):
            with self._lock:
                ids: list[Any] = list(self._in_flight)
            if ids:
                # a failed beat is tried again; at worst another worker repeats a chunk
                with contextlib.suppress(RedisError):
                    self.client.xclaim(self.stream, GROUP, self.consumer, 0, list(ids), justid=True)
