"""The storer of a queue worker: every chunk ended since its last round trip, in one pipeline.

Each chunk's records are stored and its entry acknowledged by one script
(:func:`multiagent.distributed.deadletter.finish_chunks`); the scripts of every chunk that ended
meanwhile travel together, while the slots already run their next entries.
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
            news = finish_chunks(client, queue, [end.finished for end in ended])
            for end, new in zip(ended, news, strict=True):
                _count(end, new, state=state, failed=failed)
        except RedisError as exc:  # left pending: retried after the idle time
            if not state.abandoned.is_set():  # stopping now: its connection may be closed
                print(f"worker: Redis error storing: {exc}", file=sys.stderr, flush=True)
        finally:
            with state.lock:
                for end in ended:
                    state.storing.discard(end.finished.entry_id)
                    state.release(end.finished.entry_id)
                for _end in ended:  # even on an error: a slot may wait for these (join)
                    state.ended.task_done()


def _count(end: EndedChunk, new: int, *, state: WorkerState, failed: FailureRecorder) -> None:
    """Count a stored chunk; a chunk left for its retry counts as a failed attempt."""
    outcome = end.outcome
    spent = sum(to_nano(call.cost_usd) for call in outcome.ledger.records())
    state.stats.add(chunks=1, stored=new, unfinished=len(outcome.unfinished), spent_nano=spent)
    if end.failure is not None:
        failed(end.finished.entry_id, end.fields, error=end.failure, unfinished=outcome.unfinished)
