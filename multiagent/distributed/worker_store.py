"""The storer of a queue worker: every chunk ended since its last round trip, in one pipeline.

Each chunk's records are stored and its entry acknowledged by one script
(:func:`multiagent.distributed.deadletter.finish_chunks`); the scripts of every chunk that ended
meanwhile travel together, while the slots already run their next entries. While Redis does
not answer, the same chunks are sent again every second: work that ended is stored, not run
again.
"""

from __future__ import annotations

import contextlib
import queue as queue_module
import sys
from collections.abc import Callable

import redis
from redis.exceptions import RedisError

from multiagent.distributed.deadletter import finish_chunks
from multiagent.distributed.worker_state import EndedChunk, WorkerState
from multiagent.models.budget_redis import to_nano

#: Ended chunks stored in one round trip at most.
STORE_BATCH = 64

#: Records a failed attempt of an entry: ``(entry_id, fields, *, error, unfinished)``.
FailureRecorder = Callable[..., None]


def store_ended(
    client: redis.Redis, *, queue: str, state: WorkerState, failed: FailureRecorder
) -> None:
    """Store ended chunks until every slot has returned and nothing is left to store."""
    while True:
        try:
            ended = [state.ended.get(timeout=0.1)]
        except queue_module.Empty:
            if state.slots_done.is_set():
                return
            continue
        with contextlib.suppress(queue_module.Empty):
            while len(ended) < STORE_BATCH:
                ended.append(state.ended.get_nowait())
        try:
            news = _finish(client, queue, ended, state=state)
            if news is not None:
                for end, new in zip(ended, news, strict=True):
                    _count(end, new, state=state, failed=failed)
        finally:
            with state.lock:
                for end in ended:
                    state.storing.discard(end.finished.entry_id)
                    state.release(end.finished.entry_id)
                for _end in ended:  # even on an error: a slot may wait for these (join)
                    state.ended.task_done()


def _finish(
    client: redis.Redis, queue: str, ended: list[EndedChunk], *, state: WorkerState
) -> list[int] | None:
    """Store ``ended``, tried again every second while Redis does not answer; ``None`` once the
    worker is abandoned (the entries stay pending for the others).

    Their work is done and paid for: dropped, the entries would be reclaimed and run again, and
    the calls of this run would be missing from the batch's usage. The entries stay this
    worker's meanwhile (the heartbeat keeps them); sending the same chunks twice stores each
    item and each attempt's usage once.
    """
    said: str | None = None
    while True:
        try:
            return finish_chunks(client, queue, [end.finished for end in ended])
        except RedisError as exc:
            if state.abandoned.is_set():  # stopping now: its connection may be closed
                return None
            if str(exc) != said:  # said once, not once a second while it lasts
                said = str(exc)
                print(
                    f"worker: Redis error storing, retrying every second: {exc}",
                    file=sys.stderr,
                    flush=True,
                )
            if state.abandoned.wait(1.0):
                return None


def store_now(client: redis.Redis, queue: str, end: EndedChunk, *, state: WorkerState) -> None:
    """Store one ended chunk from its slot, at once, and count it: a chunk whose run raised an
    error nobody expected, whose records must be stored before the slot counts the entry's
    failed attempt (which reads what is stored); its ``failure`` is ``None``: the slot says it."""
    news = finish_chunks(client, queue, [end.finished])
    _count(end, news[0], state=state, failed=None)


def _count(
    end: EndedChunk, new: int, *, state: WorkerState, failed: FailureRecorder | None
) -> None:
    """Count a stored chunk; a chunk left for its retry counts as a failed attempt; a chunk
    whose batch Redis lost (``new`` is -1) is said, its items counted as lost."""
    outcome = end.outcome
    if new < 0:
        # a partial record's item is unfinished too: counted once
        lost = len({r.result["id"] for r in outcome.records} | set(outcome.unfinished))
        count_lost(state, end.finished.batch_id, end.finished.chunk_id, lost, "stored")
        return
    spent = sum(to_nano(call.cost_usd) for call in outcome.ledger.records())
    state.stats.add(chunks=1, stored=new, unfinished=len(outcome.unfinished), spent_nano=spent)
    if end.failure is not None and failed is not None:
        failed(end.finished.entry_id, end.fields, error=end.failure, unfinished=outcome.unfinished)


def count_lost(state: WorkerState, batch_id: str, chunk_id: str, items: int, not_done: str) -> None:
    """Count ``items`` of a chunk whose batch is gone from Redis as lost, and say so."""
    state.stats.add(lost=items)
    print(
        f"worker: batch {batch_id} is gone from Redis (restarted without its data?); "
        f"{items} item(s) of chunk {chunk_id} not {not_done}",
        file=sys.stderr,
        flush=True,
    )
