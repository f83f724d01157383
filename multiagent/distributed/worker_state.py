"""What the threads of one queue worker share: counters, hand-off queues, the entries it holds.

The feeder (:mod:`.worker_feed`) puts taken entries on ``ready``; the slots
(:mod:`.worker`, running them through :mod:`.worker_chunks`) put ended chunks on ``ended``;
the storer (:mod:`.worker_store`) stores them. An entry is this worker's — kept fresh by the
heartbeat — from the moment it is taken until it is stored, acknowledged or left
(:meth:`WorkerState.release`).
"""

from __future__ import annotations

import json
import queue as queue_module
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import redis

from multiagent.distributed.deadletter import FinishedChunk
from multiagent.distributed.queue import batch_key
from multiagent.distributed.queue_resume import entry_current
from multiagent.graphs.batch_chunk_outcome import ChunkOutcome
from multiagent.graphs.batch_records import ItemRecord
from multiagent.nodes.state import ValidationItem


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
    #: entries taken over by another worker while this one was frozen, left to it unrun
    taken_over: int = 0
    #: what this worker's calls on entries taken over cost (paid, kept in their batch's or
    #: run's usage), in nano-USD; a chunk's is in ``spent_nano`` too
    taken_over_nano: int = 0
    #: items of chunks whose batch Redis lost (restarted without its data) as they ran
    lost: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, **counts: int) -> None:
        """Add to the counters (from any thread)."""
        with self._lock:
            for name, value in counts.items():
                setattr(self, name, getattr(self, name) + value)

    def as_dict(self) -> dict[str, int]:
        """JSON-ready counters."""
        names = ("chunks", "stored", "duplicates", "reclaimed", "unfinished", "runs", "resumed")
        more = ("failures", "dead_letters", "skipped", "taken_over", "lost")
        return {k: getattr(self, k) for k in (*names, *more)} | {
            "spent_usd": self.spent_nano / 1_000_000_000,
            "taken_over_usd": self.taken_over_nano / 1_000_000_000,
        }


@dataclass(frozen=True)
class TakenEntry:
    """An entry taken by the feeder, waiting for a slot."""

    entry_id: str
    fields: dict[str, Any]
    reclaimed: bool
    #: when it was taken (monotonic): one waiting longer than the claim idle time may have been
    #: taken over by another worker while this one was frozen
    taken_at: float = field(default_factory=time.monotonic)


@dataclass(frozen=True)
class EndedChunk:
    """A chunk that ran, waiting for the storer."""

    finished: FinishedChunk
    fields: dict[str, Any]
    outcome: ChunkOutcome
    failure: str | None  # why the entry is left for its retry; None: acknowledged


@dataclass(frozen=True)
class EntryCheck:
    """What a chunk entry's batch says of it, read when it is taken (or when it runs)."""

    #: not to run: its batch stopped, or a resume queued its items again
    skip: bool
    #: ids of its items stored finished: not run again
    done: set[str]
    #: its unfinished items' partial records (verdicts paid for, validators not asked yet):
    #: completed, asking only those validators
    partial: dict[str, ItemRecord]


def ask_entry_state(pipe: Any, batch_id: str, ids: list[str]) -> None:
    """Add the reads of :func:`entry_check` to ``pipe`` (three commands)."""
    pipe.hmget(batch_key(batch_id), ["stopped", "resumes"])
    pipe.hmget(batch_key(batch_id, "records"), ids or ["-"])
    pipe.hmget(batch_key(batch_id, "partial"), ids or ["-"])


def entry_check(fields: dict[str, Any], ids: list[str], replies: list[Any]) -> EntryCheck:
    """The entry's :class:`EntryCheck` from the three replies of :func:`ask_entry_state`."""
    (stopped, resumes), found, partial = replies
    return EntryCheck(
        skip=bool(stopped) or not entry_current(fields, resumes),
        done={item for item, value in zip(ids, found, strict=False) if value is not None},
        partial={
            item: ItemRecord.from_dict(json.loads(str(value)))
            for item, value in zip(ids, partial, strict=False)
            if value is not None
        },
    )


def records_to_complete(
    client: redis.Redis, batch_id: str, fields: dict[str, Any], items: list[ValidationItem]
) -> tuple[bool, dict[str, ItemRecord]]:
    """Whether the entry is not to run (as :func:`read_entry_check`), and the records of its
    items still to complete: incomplete (validators failed after retries, no verdict
    since), or partial (validators not asked yet); one round trip."""
    ids = [item["id"] for item in items]
    with client.pipeline(transaction=False) as pipe:
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


def read_entry_check(
    client: redis.Redis, batch_id: str, fields: dict[str, Any], ids: list[str]
) -> EntryCheck:
    """Whether the entry is not to run (its batch stopped, or a resume queued its items
    again), which of ``ids`` are stored, and which kept partial: one round trip."""
    with client.pipeline(transaction=False) as pipe:
        ask_entry_state(pipe, batch_id, ids)
        replies = pipe.execute()
    return entry_check(fields, ids, replies)


@dataclass
class WorkerState:
    """The hand-offs between a worker's threads and the entries it holds (see the module)."""

    stats: WorkerStats = field(default_factory=WorkerStats)
    stop: threading.Event = field(default_factory=threading.Event)
    #: stopping now (a second SIGTERM): running entries are left pending, errors unreported
    abandoned: threading.Event = field(default_factory=threading.Event)
    #: the feeder has returned: slots end once nothing is ready
    fed: threading.Event = field(default_factory=threading.Event)
    #: every slot has returned: the storer ends
    slots_done: threading.Event = field(default_factory=threading.Event)
    #: every thread has returned: the heartbeat ends
    done: threading.Event = field(default_factory=threading.Event)
    ready: queue_module.Queue[TakenEntry] = field(default_factory=queue_module.Queue)
    #: a slot took a ready entry: room to take another
    space: threading.Event = field(default_factory=threading.Event)
    ended: queue_module.Queue[EndedChunk] = field(default_factory=queue_module.Queue)
    lock: threading.Lock = field(default_factory=threading.Lock)
    #: taken, not yet stored: kept fresh by the heartbeat
    in_flight: set[str] = field(default_factory=set)
    #: handed to the storer
    storing: set[str] = field(default_factory=set)
    #: reclaimed entries held (one may crash its worker)
    suspects: set[str] = field(default_factory=set)
    #: entry → its batch's state (stopped? its items stored or partial?), read when taken
    checked: dict[str, EntryCheck] = field(default_factory=dict)
    #: entry → when (monotonic) it was last known to be this worker's: taken, or found still
    #: pending to it by the heartbeat (or a slot that asked)
    confirmed: dict[str, float] = field(default_factory=dict)

    def hold(self, entry_ids: list[str], *, at: float) -> None:
        """The entries are this worker's, known so at ``at``; under ``lock``."""
        self.in_flight.update(entry_ids)
        self.confirm(entry_ids, at=at)

    def confirm(self, entry_ids: Iterable[str], *, at: float) -> None:
        """The held ones of ``entry_ids`` were still this worker's at ``at``; under ``lock``."""
        for entry_id in entry_ids:
            if entry_id in self.in_flight:
                self.confirmed[entry_id] = max(at, self.confirmed.get(entry_id, at))

    def release(self, entry_id: str) -> None:
        """The entry is no longer this worker's (stored, acknowledged or left); under ``lock``."""
        self.in_flight.discard(entry_id)
        self.suspects.discard(entry_id)
        self.confirmed.pop(entry_id, None)


def item_ids(fields: dict[str, Any]) -> list[str]:
    """The ids of a chunk entry's items."""
    return [str(item["id"]) for item in json.loads(fields.get("items", "[]"))]
