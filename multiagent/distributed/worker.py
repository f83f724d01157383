"""``multiagent worker``: read a queue as a consumer group; validate chunks, run orchestrations.

Three kinds of threads, so that the ``concurrency`` call slots never wait on Redis:

- the *feeder* (:mod:`.worker_feed`) keeps a few entries taken ahead (``prefetch``, about a
  quarter of ``concurrency``): first an entry another worker left pending for longer than
  ``claim_idle_s`` (``XAUTOCLAIM``: that worker died, or the entry failed and waits for its
  retry), else new ones (``XREADGROUP``, as many as there is room for), with their batch's state
  (stopped? which items are stored already?) read in the same pipeline;
- each *slot* thread runs one taken entry at a time (:mod:`.worker_chunks`) and hands the
  result to
- the *storer* (:mod:`.worker_store`), which stores and acknowledges every chunk that has ended
  since its last round trip in one pipeline, while the slot already runs its next entry.

A chunk of a batch runs through
the validation graph one validator call at a time
(:func:`multiagent.graphs.batch_chunks.run_chunk` with ``max_concurrency=1``), on the slot's own
thread (:mod:`multiagent.graphs._inline`). ``concurrency``
is the number of calls this process has in flight: its pipeline lets that many be at the
provider at once (``ModelPipeline(max_in_flight=...)``, held around each HTTP exchange, see
:mod:`multiagent.models._in_flight`), and the worker runs half as many slot threads again
(:func:`slot_threads`), so a call's own work (graph step, node, payload, parsing: several
milliseconds of CPU) happens while ``concurrency`` other calls are in flight instead of adding
to each call's cycle; the extra threads wait at the gate, never at the provider. A queued run
(``kind=run``) takes one thread and runs or resumes its thread in the shared checkpointer
(:func:`multiagent.distributed.run_worker.execute_run`), its agents in parallel as the profile
allows. The worker stores the result once and acknowledges the entry in the same script
(:func:`multiagent.distributed.deadletter.finish_chunk`; a run:
:func:`multiagent.distributed.runs.store_run_result`, then the acknowledgement).

While an entry runs, a heartbeat re-claims it for this worker every third of ``claim_idle_s``,
so slow work on a live worker is never taken over; a killed worker stops beating and its entries
pass to the others. A worker frozen past ``claim_idle_s`` (SIGSTOP, a long pause) finds, once
resumed, its entries taken over, and leaves them to the other worker: those it had not started,
and the chunks and runs it was running, before their next model call or checkpoint
(:mod:`.entry_guard`), keeping what their calls in flight paid in their usage. An entry
whose work failed (provider outage, or an error nobody expected) is not acknowledged: it is
retried once its idle time has passed, up to ``max_attempts`` failures, then dead-lettered
(:mod:`multiagent.distributed.deadletter`); an error nobody expected is said in one line per
attempt (``verbose``: with its traceback). A chunk that such an error ended keeps what it paid
for first: its finished items and partial records are stored from its slot (this rare path's
one round trip there), so the retry asks only the validators not asked yet. An entry whose
worker is killed on every attempt is dead-lettered by its delivery count: reclaimed after more
than ``max_attempts`` deliveries.

Round trips per chunk, none of them on a slot: a share of one read and its pipelined check
(``XREADGROUP`` takes every entry there is room for; ``XAUTOCLAIM`` only a few times per
``claim_idle_s`` and when idle), a share of one pipeline of store-and-acknowledge scripts; the
model calls' own Redis work is per call: the shared limiter's; a batch queued with
``--budget`` adds one budget script per item (its admission), the calls' spend riding with the
next one. Entries taken
ahead are this worker's (heartbeat, reclaimed if it dies) like running ones, and run before a
stop returns.

A reclaimed entry may be one that kills its worker (a crash loop): it is claimed only when
nothing is taken ahead, its slot first waits until every ended chunk is stored, and nothing is
taken ahead until it is stored; so a worker dying of it takes no finished or waiting neighbour
down with it (their delivery counts, which bury an entry, stay as they were). A crash on a new
entry can cost its neighbours one delivery each, once: they come back as reclaimed entries.

A batch queued with ``--budget`` has one budget in Redis (:mod:`multiagent.models.budget_redis`)
that every worker's calls spend from, so N workers together never pass it. An item starts only
once that budget holds its whole worst case (:mod:`.worker_admission`), so a tight budget
finishes whole items instead of paying for half-validated ones. An item it refuses marks the
batch ``budget_exceeded`` and its entry is acknowledged with the items unfinished; later chunks
of the batch are acknowledged without running, until a resume queues its unfinished items again
under a larger total (:mod:`.queue_resume`; the entries from before it are then skipped).

Stopping: :meth:`QueueWorker.stop` (SIGTERM, Ctrl-C) takes no new entries, lets the taken
ones finish and store, then returns; :meth:`QueueWorker.abandon` (a second one) returns at once,
leaving the running entries pending, as does a process that is killed.
"""

from __future__ import annotations

import contextlib
import os
import queue as queue_module
import socket
import sys
import threading
import time
import traceback
from typing import Any

import redis
from redis.exceptions import RedisError

from multiagent.distributed.deadletter import DEFAULT_MAX_ATTEMPTS
from multiagent.distributed.queue import GROUP, ensure_group, finished_of, stream_key
from multiagent.distributed.worker_chunks import EntryRunner
from multiagent.distributed.worker_feed import EntryFeeder, claim_own
from multiagent.distributed.worker_state import TakenEntry, WorkerState, WorkerStats, item_ids
from multiagent.distributed.worker_store import store_ended
from multiagent.nodes.context import WorkflowContext

__all__ = ["QueueWorker", "WorkerStats", "slot_threads", "warm_models"]


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
        threads: int | None = None,
        verbose: bool = False,
    ) -> None:
        self.client = client
        self.queue = queue
        self.stream = stream_key(queue)
        self.context = context
        self.concurrency = concurrency
        self.threads = threads or concurrency
        # a quarter of the slots end at about the same time at most, so few entries taken
        # ahead keep every slot busy; few, because a worker that dies holds them too
        self.prefetch = prefetch or max(1, (self.threads + 3) // 4)
        self.claim_idle_ms = max(1, int(claim_idle_s * 1000))
        self.max_attempts = max_attempts
        self.consumer = consumer or f"{socket.gethostname()}:{os.getpid()}"
        self.verbose = verbose  # an unexpected failure's traceback too, not only its line
        self.state = WorkerState()
        self.stats = self.state.stats
        self.feeder = EntryFeeder(
            client, queue=queue, consumer=self.consumer, state=self.state,
            prefetch=self.prefetch, claim_idle_ms=self.claim_idle_ms, max_attempts=max_attempts,
        )  # fmt: skip
        self.runner = EntryRunner(
            client, queue=queue, consumer=self.consumer, context=context, state=self.state,
            max_attempts=max_attempts, claim_idle_ms=self.claim_idle_ms,
        )  # fmt: skip

    def stop(self) -> None:
        """Take no new entries; the taken ones run, are stored, and the worker returns."""
        self.state.stop.set()

    def abandon(self) -> None:
        """Stop now: :meth:`run` returns at once, the running entries stay pending (the other
        workers reclaim them), and what the slots still do is neither stored nor reported."""
        self.state.abandoned.set()
        self.state.stop.set()

    def run(self, *, idle_exit_s: float | None = None) -> WorkerStats:
        """Work until :meth:`stop` (or, with ``idle_exit_s``, until the queue stays empty);
        after :meth:`abandon`, return at once."""
        state = self.state
        ensure_group(self.client, self.queue)
        # registered at once (an idle worker is visible to `metrics` and to the others)
        self.client.xgroup_createconsumer(self.stream, GROUP, self.consumer)
        idle_exit_ms = None if idle_exit_s is None else int(idle_exit_s * 1000)
        feeder = threading.Thread(
            target=self.feeder.run, kwargs={"idle_exit_ms": idle_exit_ms}, name="worker-feeder",
            daemon=True,
        )  # fmt: skip
        slots = [
            threading.Thread(target=self._slot, name=f"worker-{n}", daemon=True)
            for n in range(self.threads)
        ]
        storer = threading.Thread(
            target=store_ended, name="worker-storer", daemon=True,
            kwargs={"client": self.client, "queue": self.queue, "state": state,
                    "failed": self.runner.failed},
        )  # fmt: skip
        beat = threading.Thread(target=self._heartbeat, name="worker-heartbeat", daemon=True)
        for thread in [feeder, *slots, storer, beat]:
            thread.start()
        for thread in [feeder, *slots]:
            _join(thread, state.abandoned)
        if not state.abandoned.is_set():
            state.slots_done.set()
            _join(storer, state.abandoned)
        if state.abandoned.is_set():  # the daemon threads end with the process
            with contextlib.suppress(RedisError):
                self.runner.flush()  # what the batch budgets' finished calls cost
            return self.stats
        self.runner.flush()  # the batch budgets' last settlements, before the worker says done
        state.stop.set()
        state.done.set()
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

    def _slot(self) -> None:
        """Run taken entries one at a time until the feeder is done and nothing is ready."""
        state = self.state
        while not state.abandoned.is_set():
            try:
                entry = state.ready.get(timeout=0.1)
            except queue_module.Empty:
                if state.fed.is_set() and state.ready.empty():
                    return
                continue
            state.space.set()
            if entry.reclaimed:  # its worker may have died of it: store what ended before
                state.ended.join()
            try:
                if not self._still_ours(entry):
                    state.stats.add(taken_over=1)
                    continue
                if entry.fields.get("kind") == "run":
                    self.runner.run(entry.entry_id, entry.fields, reclaimed=entry.reclaimed)
                else:
                    self._process(entry.entry_id, entry.fields, reclaimed=entry.reclaimed)
            except Exception as exc:
                # stopping now: what a cut-short entry raises (its run's thread pools or
                # connections going away) is no failure; it stays pending for the others
                if state.abandoned.is_set():
                    return
                if isinstance(exc, RedisError):  # left pending: retried after the idle time
                    print(
                        f"worker: Redis error on {entry.entry_id}: {exc}",
                        file=sys.stderr,
                        flush=True,
                    )
                else:
                    self._failed_unexpectedly(entry, exc)
            finally:
                with state.lock:
                    state.checked.pop(entry.entry_id, None)
                    if entry.entry_id not in state.storing:
                        state.release(entry.entry_id)

    def _still_ours(self, entry: TakenEntry) -> bool:
        """Whether ``entry`` is still this worker's to run (:meth:`EntryRunner.still_ours`:
        asked when nothing said so for half the claim idle time); the batch state of one taken
        longer ago than that is read again when it runs. Another worker took it over if this
        one was frozen meanwhile (SIGSTOP, a long pause)."""
        if time.monotonic() - entry.taken_at >= self.claim_idle_ms / 2000:
            with self.state.lock:
                self.state.checked.pop(entry.entry_id, None)  # stale: read when it runs
        return self.runner.still_ours(entry.entry_id)

    def _failed_unexpectedly(self, entry: TakenEntry, exc: Exception) -> None:
        """An error nobody expected (a bug, a database refusing): a failed attempt of the entry,
        retried after the idle time and dead-lettered at ``max_attempts``, like a provider
        outage. The slot goes on: a slot thread dying of it left a worker whose entries, taken
        ahead and kept fresh by the heartbeat, nobody ran.

        Said in one line (the entry, its batch or run, the attempt, the error, what comes next):
        a database restarting fails every running entry at once, and a traceback each buried
        what happened. ``verbose`` adds the traceback.
        """
        error = f"{type(exc).__name__}: {' '.join(str(exc).split())}"
        later = f"retried after {self.claim_idle_ms / 1000:g} s idle"
        try:
            unfinished: list[str] = []
            if entry.fields.get("kind") != "run":
                ids = item_ids(entry.fields)
                done = finished_of(self.client, str(entry.fields.get("batch", "")), ids)
                unfinished = [item for item in ids if item not in done]
            attempt = self.runner.failed(
                entry.entry_id, entry.fields, error=error, unfinished=unfinished
            )
        except RedisError as lost:  # not counted: the entry is retried after the idle time
            then = f"not counted (Redis error: {lost}); {later}"
        else:
            dead = attempt >= self.max_attempts
            then = f"attempt {attempt} of {self.max_attempts}; {'dead-lettered' if dead else later}"
        print(
            f"worker: entry {entry.entry_id} ({_owner_words(entry.fields)}) failed: {error}; "
            f"{then}",
            file=sys.stderr,
            flush=True,
        )
        if self.verbose:
            traceback.print_exception(exc, file=sys.stderr)

    def _process(self, entry_id: str, fields: dict[str, Any], *, reclaimed: bool) -> None:
        """Run one chunk entry (a seam: the crash-loop test's worker dies here)."""
        self.runner.chunk(entry_id, fields, reclaimed=reclaimed)

    def _heartbeat(self) -> None:
        """Keep this worker's running entries fresh, so nobody takes them over."""
        state = self.state
        interval = self.claim_idle_ms / 3000
        while not state.done.wait(interval):
            with state.lock:
                ids: list[Any] = list(state.in_flight)
            if ids:
                asked = time.monotonic()  # before: a freeze during the beat makes it stale
                # a failed beat is tried again; at worst another worker repeats a chunk
                with contextlib.suppress(RedisError):
                    ours = claim_own(self.client, self.stream, self.consumer, ids)
                    with state.lock:
                        state.confirm(ours, at=asked)


def slot_threads(concurrency: int, *, gated: bool) -> int:
    """Slot threads for ``concurrency`` calls in flight: half as many again when the pipeline
    keeps the calls to the bound itself (a call's CPU then overlaps the others' flight), else
    one per call."""
    return concurrency + (concurrency + 1) // 2 if gated else concurrency


def warm_models(context: WorkflowContext) -> None:
    """Build the validators' models once, before any slot runs: the provider client's import
    and wiring are paid at start, not by the first calls, and by one thread, not by each."""
    for name in context.agents.of_kind("validator"):
        spec = context.agents[name]
        context.pipeline.model_for(spec.tier, agent=spec.name)


def _owner_words(fields: dict[str, Any]) -> str:
    """What an entry is part of: its queued run, or its batch and chunk."""
    if fields.get("kind") == "run":
        return f"run {fields.get('run', '?')}"
    return f"batch {fields.get('batch', '?')} chunk {fields.get('chunk', '?')}"


def _join(thread: threading.Thread, abandoned: threading.Event) -> None:
    while thread.is_alive() and not abandoned.is_set():
        thread.join(timeout=0.2)  # short joins: signal handlers run in between
