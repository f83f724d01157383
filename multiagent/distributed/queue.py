"""Distributed batches on a Redis Stream: enqueue, store results once, report progress.

Layout (every key under ``multiagent:``):

- ``queue:{NAME}``: the stream; one entry per chunk (``batch``, ``chunk``, ``items`` as JSON,
  and ``resume`` for one queued by a resume, with ``complete`` for one completing stored items
  whose validators failed), read by the consumer group ``workers``;
- ``batch:{ID}``: a hash with the batch's manifest, queue, item and chunk counts, why it stopped
  (``stopped``) and how many times it was resumed (``resumes``, see
  :mod:`multiagent.distributed.queue_resume`);
- ``batch:{ID}:records``: item id → the finished item's record, written with ``HSETNX`` so an
  item processed twice (a worker that died after storing, before acknowledging) is stored once;
  a record completed by a resume (its failed validators asked again) replaces the one it
  completes;
- ``batch:{ID}:partial``: item id → the *partial* record of an unfinished item some of whose
  validators answered while the others were not asked yet (its chunk stopped: a budget, an
  error); the entry that runs the item again asks only those others, so no verdict is bought
  twice. The item's finished record takes it out; it never counts as finished;
- ``batch:{ID}:usage``: chunk id and attempt → the usage of that attempt (``HSETNX``): every
  attempt that ran paid for its calls, a retry of a chunk's unfinished items as well, and one
  taken over by another worker as it ran (``CHUNK:taken-over-…``, see :mod:`.entry_guard`);
- ``budget:batch:{ID}``: the batch's budget when queued with one, shared by every worker
  (:mod:`multiagent.models.budget_redis`).
- ``batch:{ID}:dead``: the ids of items whose entry was dead-lettered (see
  :mod:`multiagent.distributed.deadletter`).

The same stream carries orchestration runs (``kind=run``, see :mod:`multiagent.distributed.runs`).

A worker stores a chunk's records and acknowledges the entry in one script
(:func:`multiagent.distributed.deadletter.finish_chunk`): a crash before it costs a repeated
run, never a lost item.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from typing import Any

import redis
from redis.exceptions import ResponseError, WatchError

from multiagent._inputs import ID_PATTERN, ID_RULE
from multiagent.errors import UsageError
from multiagent.graphs.batch_chunks import plan_chunks
from multiagent.graphs.batch_records import ItemRecord
from multiagent.graphs.batch_store import BatchManifest
from multiagent.models.budget_redis import RUN_TTL_S, RedisBudget, budget_key, to_nano
from multiagent.nodes.usage import total_usage

PREFIX = "multiagent:"
GROUP = "workers"
DEFAULT_QUEUE = "validation"
#: Distinct texts per stream entry: small, so work spreads evenly over workers.
QUEUE_CHUNK_SIZE = 4
_QUEUE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")
#: A new batch's id is ``batch-`` and 12 hex digits; ``--thread ID`` names one with any id.
_BATCH_ID = re.compile(ID_PATTERN)


def check_queue_name(name: str) -> str:
    """``name`` when it is a valid queue name; else one line naming it."""
    if not _QUEUE_NAME.fullmatch(name):
        raise UsageError(
            f"invalid queue name {name!r}: use 1-64 letters, digits, '_', '.', ':' or '-', "
            "starting with a letter or digit (no spaces)"
        )
    return name


def stream_key(queue: str) -> str:
    """The stream of queue ``queue``."""
    return f"{PREFIX}queue:{queue}"


def batch_key(batch_id: str, part: str = "") -> str:
    """The hash of batch ``batch_id`` (or one of its parts: ``records``, ``usage``)."""
    return f"{PREFIX}batch:{batch_id}" + (f":{part}" if part else "")


def ensure_group(client: redis.Redis, queue: str) -> None:
    """Create the queue's stream and consumer group when missing (reading from the start)."""
    try:
        client.xgroup_create(stream_key(queue), GROUP, id="0", mkstream=True)
    except ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


@dataclass(frozen=True)
class Enqueued:
    """A batch put on a queue."""

    batch_id: str
    queue: str
    items: int
    chunks: int


def enqueue_batch(
    client: redis.Redis,
    *,
    queue: str,
    items: list[Any],
    validators: list[str],
    threshold: float,
    chunk_size: int = QUEUE_CHUNK_SIZE,
    budget_usd: float | None = None,
    batch_id: str | None = None,
) -> Enqueued:
    """Put a checked batch on ``queue`` in one transaction; return its id (new unless given).

    ``items`` are :class:`~multiagent.nodes.state.ValidationItem` s already checked (unique
    ids, non-empty texts); identical texts go in the same entry so they are validated once.

    Raises:
        UsageError: A bad queue name or batch id, or a given id that a batch or a run already
            has (nothing is enqueued).
    """
    from multiagent.distributed.deadletter import run_key

    check_queue_name(queue)
    if batch_id is not None and not _BATCH_ID.fullmatch(batch_id):
        raise UsageError(f"invalid batch id {batch_id!r}: {ID_RULE}")
    batch_id = batch_id or f"batch-{uuid.uuid4().hex[:12]}"
    manifest = BatchManifest(
        batch_id=batch_id, items=items, validators=validators, threshold=threshold,
        chunk_size=chunk_size,
    )  # fmt: skip
    chunks = plan_chunks(items, chunk_size=chunk_size)
    taken = UsageError(f"batch or run {batch_id!r} is already queued; choose a new --thread id")
    with client.pipeline(transaction=True) as pipe:
        # a given id may be taken: checked and claimed in one transaction (WATCH)
        pipe.watch(batch_key(batch_id), run_key(batch_id))  # type: ignore[no-untyped-call]
        if pipe.exists(batch_key(batch_id), run_key(batch_id)):
            raise taken
        ensure_group(client, queue)
        pipe.multi()
        pipe.hset(
            batch_key(batch_id),
            mapping={
                "manifest": manifest.as_json(),
                # what a worker needs of the manifest: a few bytes, however many items
                "judging": json.dumps({"validators": validators, "threshold": threshold}),
                "queue": queue,
                "items": len(items),
                "chunks": len(chunks),
            },
        )
        if budget_usd is not None:
            pipe.hset(batch_key(batch_id), "budget_usd", repr(budget_usd))
            pipe.hset(budget_key("batch", batch_id), "cap", to_nano(budget_usd))
            pipe.expire(budget_key("batch", batch_id), RUN_TTL_S)
        for number, chunk in enumerate(chunks):
            pipe.xadd(
                stream_key(queue),
                {"batch": batch_id, "chunk": f"c{number}", "items": json.dumps(chunk)},
            )
        try:
            pipe.execute()
        except WatchError:  # queued meanwhile under the same id by someone else
            raise taken from None
    return Enqueued(batch_id=batch_id, queue=queue, items=len(items), chunks=len(chunks))


def load_manifest(client: redis.Redis, batch_id: str) -> BatchManifest:
    """The manifest of ``batch_id``; one line naming it when there is no such batch."""
    text = client.hget(batch_key(batch_id), "manifest") if _BATCH_ID.fullmatch(batch_id) else None
    if text is None:
        raise UsageError(
            f"unknown batch {batch_id!r}; use the id printed when it was queued "
            "(batch-0123456789ab, or its --thread ID)"
        )
    return BatchManifest.from_json(str(text))


@dataclass(frozen=True)
class Judging:
    """How a batch's items are judged: all a worker needs of its manifest."""

    validators: list[str]
    threshold: float


def load_judging(client: redis.Redis, batch_id: str) -> Judging | None:
    """How ``batch_id``'s items are judged, or ``None`` for a batch that does not exist.

    Read from the batch's small ``judging`` field, not from its manifest, which holds every item
    (megabytes for a large batch, read by each worker); a batch queued before the field existed
    is read from its manifest.
    """
    if not _BATCH_ID.fullmatch(batch_id):
        return None
    text = client.hget(batch_key(batch_id), "judging")
    if text is not None:
        found = json.loads(str(text))
        return Judging(validators=list(found["validators"]), threshold=float(found["threshold"]))
    try:
        manifest = load_manifest(client, batch_id)
    except UsageError:
        return None
    return Judging(validators=manifest.validators, threshold=manifest.threshold)


def finished_of(client: redis.Redis, batch_id: str, ids: list[str]) -> set[str]:
    """Which of ``ids`` already have a stored record."""
    if not ids:
        return set()
    found = client.hmget(batch_key(batch_id, "records"), ids)
    return {item for item, value in zip(ids, found, strict=True) if value is not None}


def batch_status(client: redis.Redis, batch_id: str) -> dict[str, Any]:
    """How far batch ``batch_id`` is: items finished of all, runs, the queue's backlog."""
    manifest = load_manifest(client, batch_id)
    meta = client.hgetall(batch_key(batch_id))
    finished = int(client.hlen(batch_key(batch_id, "records")))
    partial = int(client.hlen(batch_key(batch_id, "partial")))
    dead = int(client.scard(batch_key(batch_id, "dead")))
    total = len(manifest.items)
    queue = str(meta.get("queue", DEFAULT_QUEUE))
    pending = 0
    if client.exists(stream_key(queue)):
        try:
            pending = int(client.xpending(stream_key(queue), GROUP)["pending"])
        except ResponseError:  # no group yet
            pending = 0
    return {
        "batch_id": batch_id,
        "queue": queue,
        "kind": "batch",
        "state": _state(finished=finished, dead=dead, total=total, stopped=meta.get("stopped")),
        "items": total,
        "finished": finished,
        # a count under its own key: ``unfinished`` is always the list of ids (batch results)
        "unfinished_count": total - finished,
        # unfinished items whose verdicts paid for so far are kept (the rest still to ask)
        "partial_count": partial,
        "dead_items": dead,
        "dead_letters": int(meta.get("dead_letters", 0)),
        "failures": int(meta.get("failures", 0)),
        "chunks": int(meta.get("chunks", 0)),
        "chunk_runs": int(meta.get("runs", 0)),
        "queue_length": int(client.xlen(stream_key(queue))) if pending >= 0 else 0,
        "queue_pending": pending,
        "last_error": meta.get("last_error"),
    } | ({"budget": _budget_report(client, batch_id)} if "budget_usd" in meta else {})


def _budget_report(client: redis.Redis, batch_id: str) -> dict[str, Any]:
    """The batch's shared budget: cap, spent, held, and what each worker holds."""
    budget = RedisBudget(client, key=budget_key("batch", batch_id), cap_usd=None)
    return budget.report()


def _state(*, finished: int, dead: int, total: int, stopped: Any = None) -> str:
    """``completed`` (every item), why it stopped (``budget_exceeded``), ``failed`` (the rest
    dead-lettered), else ``running``."""
    if finished >= total:
        return "completed"
    if stopped:
        return str(stopped)
    return "failed" if finished + dead >= total else "running"


def batch_results(client: redis.Redis, batch_id: str) -> dict[str, Any]:
    """The finished items' results in input order, the unfinished ids (``partial``: those of
    them with verdicts kept, the validators not asked yet still to ask), the incomplete ones
    (decided without validators that failed: a resume asks only those again), and the usage."""
    manifest = load_manifest(client, batch_id)
    stored = client.hgetall(batch_key(batch_id, "records"))
    partial = set(client.hkeys(batch_key(batch_id, "partial")))
    usage = [
        entry
        for text in client.hvals(batch_key(batch_id, "usage"))
        for entry in json.loads(str(text))
    ]
    dead = set(client.smembers(batch_key(batch_id, "dead")))
    results, verdicts, unfinished, incomplete = [], [], [], []
    for item in manifest.items:
        text = stored.get(item["id"])
        if text is None:
            unfinished.append(item["id"])
            continue
        record = ItemRecord.from_dict(json.loads(str(text)))
        results.append(record.result)
        verdicts.extend(record.verdicts)
        if record.failed_validators(item):
            incomplete.append(item["id"])
    return {
        "batch_id": batch_id,
        "kind": "batch",
        "state": _state(
            finished=len(results),
            dead=len(dead),
            total=len(manifest.items),
            stopped=client.hget(batch_key(batch_id), "stopped"),
        ),
        "validators": manifest.validators,
        "threshold": manifest.threshold,
        "items": len(manifest.items),
        "finished": len(results),
        "results": results,
        "verdicts": verdicts,
        "unfinished": unfinished,
        "unfinished_count": len(unfinished),
        "partial": [item for item in unfinished if item in partial],
        "dead_lettered": [item for item in unfinished if item in dead],
        "incomplete": incomplete,
        "incomplete_count": len(incomplete),
        "usage": total_usage(usage),
    }
