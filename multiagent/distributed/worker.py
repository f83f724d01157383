"""``multiagent worker``: read a queue as a consumer group; validate chunks, run orchestrations.

Three kinds of threads, so that the ``concurrency`` call slots never wait on Redis:

- the *feeder* keeps a few entries taken ahead (``prefetch``, about a quarter of
  ``concurrency``): first an entry another worker left pending for longer than ``claim_idle_s``
  (``XAUTOCLAIM``: that worker died, or the entry failed and waits for its retry), else new
  ones (``XREADGROUP``, as many as there is room for), with their batch's state (stopped? which
  items are stored already?) read in the same pipeline;
- each of ``concurrency`` *slot* threads runs one taken entry at a time and hands the result to
- the *storer*, which stores and acknowledges every chunk that has ended since its last round
  trip in one pipeline, while the slot already runs its next entry.

A chunk of a batch runs through
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

Round trips per chunk, none of them on a slot: a share of one read and its pipelined check
(``XREADGROUP`` takes every entry there is room for; ``XAUTOCLAIM`` only a few times per
``claim_idle_s`` and when idle), a share of one pipeline of store-and-acknowledge scripts; the
model calls' own Redis work (limiter, budget) is per call. Entries taken ahead are this worker's
(heartbeat, reclaimed if it dies) like running ones, and run before a stop returns.

A reclaimed entry may be one that kills its worker (a crash loop): it is claimed only when
nothing is taken ahead, its slot first waits until every ended chunk is stored, and nothing is
taken ahead until it is stored; so a worker dying of it takes no finished or waiting neighbour
down with it (their delivery counts, which bury an entry, stay as they were). A crash on a new
entry can cost its neighbours one delivery each, once: they come back as reclaimed entries.

A batch queued with ``--budget`` has one budget in Redis (:mod:`multiagent.models.budget_redis`)
that every worker's calls reserve against and settle into, so N workers together never pass it.
A chunk refused by that budget marks the batch ``budget_exceeded`` and is acknowledged with its
items unfinished; later chunks of the batch are acknowledged without running.

Stopping: :meth:`QueueWorker.stop` (SIGTERM, Ctrl-C) takes no new entries, lets the taken
ones finish and store, then returns; a process that is killed instead leaves its entries
pending for the others.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue as queue_module
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
    FinishedChunk,
    acknowledge,
    bury_redelivered,
    count_done,
    finish_chunks,
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
from multiagent.graphs.batch_chunks import ChunkOutcome, run_chunk
from multiagent.graphs.batch_store import BatchManifest
from multiagent.models.budget_redis import RedisBudget, budget_key, to_nano
from multiagent.models.ledger import RunLedger
from multiagent.nodes.context import WorkflowContext

#: How long a read blocks waiting for new entries; also how soon a stop is noticed when idle.
READ_BLOCK_MS = 500
#: Ended chunks stored in one round trip at most.
STORE_BATCH = 64


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
        prefetch: int | None = None,
    ) -> None:
        self.client = client
        self.queue = queue
        self.stream = stream_key(queue)
        self.context = context
        self.concurrency = concurrency
        # a quarter of the slots end at about the same time at most, so few entries taken
        # ahead keep every slot busy; few, because a worker that dies holds them too
        self.prefetch = prefetch or max(1, (concurrency + 3) // 4)
        self.claim_idle_ms = max(1, int(claim_idle_s * 1000))
        self.max_attempts = max_attempts
        self.consumer = consumer or f"{socket.gethostname()}:{os.getpid()}"
        self.stats = WorkerStats()
        self._stop = threading.Event()
        self._fed = threading.Event()  # the feeder has returned: slots end once nothing is ready
        self._slots_done = threading.Event()  # every slot has returned: the storer ends
        self._done = threading.Event()  # every thread has returned: the heartbeat ends
        self._ready: queue_module.Queue[_Taken] = queue_module.Queue()
        self._space = threading.Event()  # a slot took a ready entry: room to take another
        self._ended: queue_module.Queue[_Ended] = queue_module.Queue()
        self._in_flight: set[str] = set()  # taken, not yet stored: kept fresh by the heartbeat
        self._storing: set[str] = set()  # handed to the storer
        self._suspects: set[str] = set()  # reclaimed entries held (one may crash its worker)
        self._checked: dict[str, tuple[bool, set[str]]] = {}  # entry → (stopped, stored ids)
        self._lock = threading.Lock()
        self._manifests: dict[str, BatchManifest] = {}
        self._budgets: dict[str, RedisBudget | None] = {}
        self._next_claim = 0.0  # monotonic time of the next look for abandoned entries
        self._idle_exit_ms: int | None = None

    def stop(self) -> None:
        """Take no new entries; the taken ones run, are stored, and the worker returns."""
        self._stop.set()

    def run(self, *, idle_exit_s: float | None = None) -> WorkerStats:
        """Work until :meth:`stop` (or, with ``idle_exit_s``, until the queue stays empty)."""
        ensure_group(self.client, self.queue)
        # registered at once (an idle worker is visible to `metrics` and to the others)
        self.client.xgroup_createconsumer(self.stream, GROUP, self.consumer)
        self._idle_exit_ms = None if idle_exit_s is None else int(idle_exit_s * 1000)
        feeder = threading.Thread(target=self._feed, name="worker-feeder", daemon=True)
        slots = [
            threading.Thread(target=self._slot, name=f"worker-{n}", daemon=True)
            for n in range(self.concurrency)
        ]
        storer = threading.Thread(target=self._store_loop, name="worker-storer", daemon=True)
        beat = threading.Thread(target=self._heartbeat, name="worker-heartbeat", daemon=True)
        for thread in [feeder, *slots, storer, beat]:
            thread.start()
        for thread in [feeder, *slots]:
            _join(thread)
        self._slots_done.set()
        _join(storer)
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

    # -- the feeder: entries taken ahead, with their batch's state ------------------------------

    def _feed(self) -> None:
        idle_ms = 0
        try:
            while not self._stop.is_set():
                self._space.clear()
                with self._lock:
                    suspect = bool(self._suspects)
                room = 0 if suspect else self.prefetch - self._ready.qsize()
                if room <= 0:
                    self._space.wait(READ_BLOCK_MS / 1000)
                    continue
                try:
                    taken = self._take(room)
                except RedisError as exc:
                    print(f"worker: Redis error, retrying: {exc}", file=sys.stderr, flush=True)
                    self._stop.wait(1.0)
                    continue
                if taken:
                    idle_ms = 0
                    for entry in taken:
                        self._ready.put(entry)
                    continue
                with self._lock:
                    busy = bool(self._in_flight)
                idle_ms = 0 if busy else idle_ms + READ_BLOCK_MS
                if self._idle_exit_ms is not None and idle_ms >= self._idle_exit_ms:
                    return
        finally:
            self._fed.set()

    def _take(self, room: int) -> list[_Taken]:
        """One abandoned entry (claimed from a dead worker) or up to ``room`` new ones; none when
        idle. Each is this worker's (in flight, heartbeat) from here until stored."""
        taken: list[_Taken] = []
        while self._ready.empty() and self._claim_due():
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
                taken.append(_Taken(entry_id, dict(fields), reclaimed=True))
                with self._lock:
                    self._suspects.add(entry_id)
                break
        if not taken:
            replies: Any = self.client.xreadgroup(
                GROUP, self.consumer, {self.stream: ">"}, count=room, block=READ_BLOCK_MS
            )
            for _stream, entries in replies or []:
                taken += [_Taken(str(i), dict(f), reclaimed=False) for i, f in entries]
            if not taken:
                self._claim_now()  # idle: look for abandoned entries at once
        with self._lock:
            self._in_flight.update(entry.entry_id for entry in taken)
        self._check(taken)
        return taken

    def _check(self, taken: list[_Taken]) -> None:
        """Read the batch state of every taken chunk in one pipeline (see :meth:`_batch_state`)."""
        chunks = [entry for entry in taken if entry.fields.get("kind") != "run"]
        if not chunks:
            return
        with self.client.pipeline(transaction=False) as pipe:
            for entry in chunks:
                batch_id = str(entry.fields.get("batch", ""))
                pipe.hget(batch_key(batch_id), "stopped")
                pipe.hmget(batch_key(batch_id, "records"), _ids(entry.fields) or ["-"])
            replies = pipe.execute()
        with self._lock:
            for n, entry in enumerate(chunks):
                stopped, found = replies[2 * n], replies[2 * n + 1]
                ids = _ids(entry.fields)
                done = {i for i, value in zip(ids, found, strict=False) if value is not None}
                self._checked[entry.entry_id] = (bool(stopped), done)

    # Looking for abandoned entries costs a round trip; an entry becomes abandoned only after
    # claim_idle_s, so the process looks a few times per claim_idle_s (and whenever idle), and
    # keeps claiming while it finds some, instead of once per entry.
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
            ids = _ids(fields)
            done = finished_of(self.client, str(fields.get("batch", "")), ids)
            unfinished = [item for item in ids if item not in done]
        bury_redelivered(
            self.client, self.queue, entry_id, fields, delivered=delivered,
            unfinished=unfinished, max_attempts=self.max_attempts,
        )  # fmt: skip
        self.stats.add(dead_letters=1)
        return True

    # -- the slots: one entry at a time each -----------------------------------------------------

    def _slot(self) -> None:
        while True:
            try:
                entry = self._ready.get(timeout=0.1)
            except queue_module.Empty:
                if self._fed.is_set() and self._ready.empty():
                    return
                continue
            self._space.set()
            if entry.reclaimed:  # its worker may have died of it: store what ended before
                self._ended.join()
            try:
                if entry.fields.get("kind") == "run":
                    self._process_run(entry.entry_id, entry.fields, reclaimed=entry.reclaimed)
                else:
                    self._process(entry.entry_id, entry.fields, reclaimed=entry.reclaimed)
            except RedisError as exc:  # left pending: retried after the idle time
                print(
                    f"worker: Redis error on {entry.entry_id}: {exc}", file=sys.stderr, flush=True
                )
            finally:
                with self._lock:
                    self._checked.pop(entry.entry_id, None)
                    if entry.entry_id not in self._storing:
                        self._release(entry.entry_id)

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
            with self._lock:
                checked = self._checked.get(entry_id)
            stopped, done = checked or self._batch_state(batch_id, [item["id"] for item in items])
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
        if outcome.status == "budget_exceeded":  # at once: the next chunks are not started
            self.client.hset(
                batch_key(batch_id),
                mapping={"stopped": "budget_exceeded", "last_error": outcome.message},
            )
        # unfinished items (no validator answered) leave the entry pending for its retry;
        # a batch out of budget is acknowledged: no worker could finish it
        retry = bool(outcome.unfinished) and outcome.status != "budget_exceeded"
        finished = FinishedChunk(
            entry_id=entry_id, batch_id=batch_id, chunk_id=chunk_id,
            records=[(r.result["id"], json.dumps(r.as_dict())) for r in outcome.records],
            usage_json=json.dumps(outcome.usage), ack=not retry,
        )  # fmt: skip
        failure = (outcome.error or outcome.message or outcome.status) if retry else None
        with self._lock:
            self._storing.add(entry_id)
        self._ended.put(_Ended(finished, fields, outcome, failure))

    # -- the storer: every ended chunk in one round trip -----------------------------------------

    def _store_loop(self) -> None:
        while True:
            try:
                ended = [self._ended.get(timeout=0.1)]
            except queue_module.Empty:
                if self._slots_done.is_set():
                    return
                continue
            with contextlib.suppress(queue_module.Empty):
                while len(ended) < STORE_BATCH:
                    ended.append(self._ended.get_nowait())
            try:
                news = finish_chunks(self.client, self.queue, [end.finished for end in ended])
                for end, new in zip(ended, news, strict=True):
                    self._stored(end, new)
            except RedisError as exc:  # left pending: retried after the idle time
                print(f"worker: Redis error storing: {exc}", file=sys.stderr, flush=True)
            finally:
                with self._lock:
                    for end in ended:
                        self._storing.discard(end.finished.entry_id)
                        self._release(end.finished.entry_id)
                    for _end in ended:  # even on an error: a slot may wait for these (join)
                        self._ended.task_done()

    def _release(self, entry_id: str) -> None:
        """The entry is no longer this worker's (stored, acknowledged or left); under the lock."""
        self._in_flight.discard(entry_id)
        self._suspects.discard(entry_id)

    def _stored(self, end: _Ended, new: int) -> None:
        outcome = end.outcome
        spent = sum(to_nano(call.cost_usd) for call in outcome.ledger.records())
        self.stats.add(chunks=1, stored=new, unfinished=len(outcome.unfinished), spent_nano=spent)
        if end.failure is not None:
            self._failed(
                end.finished.entry_id, end.fields, error=end.failure, unfinished=outcome.unfinished
            )

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


@dataclass(frozen=True)
class _Taken:
    """An entry taken by the feeder, waiting for a slot."""

    entry_id: str
    fields: dict[str, Any]
    reclaimed: bool


@dataclass(frozen=True)
class _Ended:
    """A chunk that ran, waiting for the storer."""

    finished: FinishedChunk
    fields: dict[str, Any]
    outcome: ChunkOutcome
    failure: str | None  # why the entry is left for its retry; None: acknowledged


def _ids(fields: dict[str, Any]) -> list[str]:
    return [str(item["id"]) for item in json.loads(fields.get("items", "[]"))]


def _join(thread: threading.Thread) -> None:
    while thread.is_alive():
        thread.join(timeout=0.2)  # short joins: signal handlers run in between
