"""Bounded retries of queue entries, a dead-letter stream, and the finished-work counters.

An entry whose work fails (a provider outage: no validator answered, a run whose model calls
kept failing after the pipeline's own retries) is left unacknowledged, so another worker (or the
same one) takes it again once its idle time has passed: that idle time is the back-off between
attempts. Each failure is counted per entry (``attempts:{QUEUE}``, entry id → failures); the
entry that reaches ``max_attempts`` failures is moved to ``dead:{QUEUE}`` (a stream keeping its
fields, the last error and the count), acknowledged and deleted from the queue, and its batch or
run says so in ``multiagent batch status``. Nothing is retried forever.

Finished work is counted in per-second buckets (``stats:{QUEUE}:{SECOND}``, server time, kept
three minutes) plus a running total, for the queue's throughput in the metrics.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import redis
from redis.exceptions import NoScriptError

from multiagent.distributed.queue import GROUP, PREFIX, batch_key, stream_key

#: Failures of one entry before it is dead-lettered (the first run included).
DEFAULT_MAX_ATTEMPTS = 3
#: How long a per-second bucket of finished work is kept.
BUCKET_TTL_S = 180

# Server time (never a local clock): buckets from every machine line up.
_COUNT_DONE = """
local second = redis.call('TIME')[1]
local bucket = KEYS[1] .. ':' .. second
redis.call('INCRBY', bucket, ARGV[1])
redis.call('EXPIRE', bucket, tonumber(ARGV[2]))
redis.call('INCRBY', KEYS[1] .. ':total', ARGV[1])
return second
"""


def attempts_key(queue: str) -> str:
    """Entry id → failures so far, for ``queue``."""
    return f"{PREFIX}attempts:{queue}"


def dead_key(queue: str) -> str:
    """The dead-letter stream of ``queue``."""
    return f"{PREFIX}dead:{queue}"


def stats_key(queue: str) -> str:
    """The prefix of ``queue``'s finished-work counters."""
    return f"{PREFIX}stats:{queue}"


def run_key(run_id: str) -> str:
    """The hash of queued run ``run_id``."""
    return f"{PREFIX}run:{run_id}"


def count_done(client: redis.Redis, queue: str, amount: int) -> None:
    """Add ``amount`` finished items (or runs) to ``queue``'s counters."""
    if amount > 0:
        client.eval(_COUNT_DONE, 1, stats_key(queue), amount, BUCKET_TTL_S)


# One round trip for the end of a chunk: store its records (each item once, HSETNX; a chunk that
# completed stored items replaces their records, HSET, ARGV[7] = '1'), its partial records (items
# some validators answered and others were not asked yet: kept in the batch's partial hash, in
# place of an earlier one, unless the item was finished meanwhile; a finished record takes the
# item out of it), its usage, count the new finished ones in the throughput buckets, and (when
# done) acknowledge and delete the entry. ARGV[8] is how many of the (id, record) pairs that
# follow are finished records; the partial ones come after them.
# Storing and acknowledging in one script also means no crash can fall between the two.
# A batch without its manifest was lost (Redis restarted without its data while the chunk ran):
# its entry is acknowledged, nothing stored, so no keys of a batch nobody can read are left.
_FINISH_CHUNK = """
local new = 0
if redis.call('HEXISTS', KEYS[3], 'manifest') == 0 then
  redis.call('XACK', KEYS[5], ARGV[3], ARGV[4])
  redis.call('XDEL', KEYS[5], ARGV[4])
  redis.call('HDEL', KEYS[6], ARGV[4])
  return -1
end
local store = ARGV[7] == '1' and 'HSET' or 'HSETNX'
local last = 8 + 2 * tonumber(ARGV[8])
for i = 9, last, 2 do
  new = new + redis.call(store, KEYS[1], ARGV[i], ARGV[i + 1])
  redis.call('HDEL', KEYS[7], ARGV[i])
end
for i = last + 1, #ARGV, 2 do
  if redis.call('HEXISTS', KEYS[1], ARGV[i]) == 0 then
    redis.call('HSET', KEYS[7], ARGV[i], ARGV[i + 1])
  end
end
redis.call('HSETNX', KEYS[2], ARGV[1], ARGV[2])
redis.call('HINCRBY', KEYS[3], 'runs', 1)
if new > 0 then
  local bucket = KEYS[4] .. ':' .. redis.call('TIME')[1]
  redis.call('INCRBY', bucket, new)
  redis.call('EXPIRE', bucket, tonumber(ARGV[6]))
  redis.call('INCRBY', KEYS[4] .. ':total', new)
end
if ARGV[5] == '1' then
  redis.call('XACK', KEYS[5], ARGV[3], ARGV[4])
  redis.call('XDEL', KEYS[5], ARGV[4])
  redis.call('HDEL', KEYS[6], ARGV[4])
end
return new
"""
_FINISH_SHA = hashlib.sha1(_FINISH_CHUNK.encode()).hexdigest()


@dataclass(frozen=True)
class FinishedChunk:
    """One chunk's end, to store and (when ``ack``) acknowledge: see :func:`finish_chunks`."""

    entry_id: str
    batch_id: str
    chunk_id: str
    records: Sequence[tuple[str, str]]
    usage_json: str
    ack: bool
    #: names this attempt's usage: each attempt of a chunk that ran (a retry of its unfinished
    #: items, a rerun after a lost store) paid for its calls; the same attempt stored twice
    #: (resent after a lost reply) counts once
    attempt: str = ""
    #: its records complete stored items (their failed validators asked again): they replace
    #: the records they complete, and only an item finished now (its record was partial) counts
    #: as new
    replace: bool = False
    #: ``(item id, record JSON)`` of its partial records: unfinished items some validators
    #: answered, the others not asked yet (kept so that their verdicts are not bought again)
    partial: Sequence[tuple[str, str]] = ()

    @property
    def usage_field(self) -> str:
        """The field of the batch's usage hash that this attempt's usage is kept under."""
        return f"{self.chunk_id}:{self.attempt}" if self.attempt else self.chunk_id


def finish_chunks(client: redis.Redis, queue: str, chunks: Sequence[FinishedChunk]) -> list[int]:
    """Store chunks' records and usage, count them, acknowledge their entries: one round trip.

    Each chunk is one script run (its records stored before its entry is acknowledged, no crash
    between the two); the scripts of several chunks travel in one pipeline, so a worker whose
    chunks end together pays one round trip for all of them.

    Args:
        client: The Redis client.
        queue: The entries' queue.
        chunks: What to store: per chunk its entry, batch, chunk id and attempt (its usage is
            kept once per attempt), ``(item id, record JSON)`` of the finished items (an id already
            stored keeps its first record: an entry run twice stores each item once) and of the
            partial ones (kept until the item is finished), the usage as JSON, and whether to
            acknowledge and delete the entry (``False``: it failed and waits for its retry).

    Returns:
        How many finished records were new, per chunk; -1 for a chunk whose batch Redis has
        lost (its entry acknowledged, nothing stored).
    """
    if not chunks:
        return []
    calls = []
    for chunk in chunks:
        keys = [
            batch_key(chunk.batch_id, "records"), batch_key(chunk.batch_id, "usage"),
            batch_key(chunk.batch_id), stats_key(queue), stream_key(queue), attempts_key(queue),
            batch_key(chunk.batch_id, "partial"),
        ]  # fmt: skip
        head = [
            chunk.usage_field, chunk.usage_json, GROUP, chunk.entry_id, "1" if chunk.ack else "0",
            BUCKET_TTL_S, "1" if chunk.replace else "0", len(chunk.records),
        ]  # fmt: skip
        pairs = [*chunk.records, *chunk.partial]
        calls.append((keys, [*head, *(value for pair in pairs for value in pair)]))
    try:
        return _run_finish(client, calls)
    except NoScriptError:  # a restarted Redis forgot the script: none of the calls ran
        client.script_load(_FINISH_CHUNK)
        return _run_finish(client, calls)


def _run_finish(client: redis.Redis, calls: list[tuple[list[str], list[Any]]]) -> list[int]:
    # EVALSHA: the script's body is not sent with every chunk
    with client.pipeline(transaction=False) as pipe:
        for keys, args in calls:
            pipe.evalsha(_FINISH_SHA, len(keys), *keys, *args)
        return [int(new) for new in pipe.execute()]


def finish_chunk(
    client: redis.Redis,
    queue: str,
    entry_id: str,
    *,
    batch_id: str,
    chunk_id: str,
    records: Sequence[tuple[str, str]],
    usage_json: str,
    ack: bool,
) -> int:
    """Store one chunk's records and usage, count them, acknowledge its entry (see
    :func:`finish_chunks`); how many records were new."""
    chunk = FinishedChunk(
        entry_id=entry_id, batch_id=batch_id, chunk_id=chunk_id, records=records,
        usage_json=usage_json, ack=ack,
    )  # fmt: skip
    return finish_chunks(client, queue, [chunk])[0]


def acknowledge(client: redis.Redis, queue: str, entry_id: str) -> None:
    """The entry is done: acknowledge and delete it, forget its failures."""
    with client.pipeline(transaction=True) as pipe:
        pipe.xack(stream_key(queue), GROUP, entry_id)
        pipe.xdel(stream_key(queue), entry_id)
        pipe.hdel(attempts_key(queue), entry_id)
        pipe.execute()


def record_failure(
    client: redis.Redis,
    queue: str,
    entry_id: str,
    fields: Mapping[str, Any],
    *,
    error: str,
    unfinished: list[str],
    max_attempts: int,
) -> int:
    """Count a failed attempt of an entry; dead-letter it at ``max_attempts``.

    Args:
        client: The Redis client.
        queue: The entry's queue.
        entry_id: The stream entry.
        fields: The entry's fields (kept in the dead letter).
        error: Why this attempt failed (one line).
        unfinished: The ids left unfinished (a chunk's items; empty for a run).
        max_attempts: Failures after which the entry is dead-lettered.

    Returns:
        This attempt's number: the entry is dead-lettered once it reaches ``max_attempts``,
        else it stays pending and is retried.
    """
    failures = int(client.hincrby(attempts_key(queue), entry_id, 1))
    owner = _owner_key(fields)
    if owner is not None:  # the batch's (or run's) failed attempts, all entries together
        with client.pipeline(transaction=True) as pipe:
            pipe.hset(owner, "last_error", error)
            pipe.hincrby(owner, "failures", 1)
            pipe.execute()
    if failures >= max_attempts:
        _bury(
            client, queue, entry_id, fields, error=error, attempts=failures, unfinished=unfinished
        )
    return failures


def times_delivered(client: redis.Redis, queue: str, entry_id: str) -> int:
    """How many times ``entry_id`` was handed to a worker (``XPENDING``'s delivery count)."""
    stream = stream_key(queue)
    found: Any = client.xpending_range(stream, GROUP, min=entry_id, max=entry_id, count=1)
    return int(found[0]["times_delivered"]) if found else 0


def bury_redelivered(
    client: redis.Redis,
    queue: str,
    entry_id: str,
    fields: Mapping[str, Any],
    *,
    delivered: int,
    unfinished: list[str],
    max_attempts: int,
) -> bool:
    """Dead-letter an entry handed out more than ``max_attempts`` times; ``False`` if not yet.

    Reported failures are counted by :func:`record_failure`; this catches the entries that
    never report: a worker killed (out of memory, a crash) on every attempt leaves no failure
    behind, only the delivery count that each reclaim raises.
    """
    if delivered <= max_attempts:
        return False
    error = f"delivered {delivered} times and never finished: its worker died on every attempt"
    _bury(client, queue, entry_id, fields, error=error, attempts=delivered, unfinished=unfinished)
    owner = _owner_key(fields)
    if owner is not None:
        client.hset(owner, "last_error", error)
    return True


def _bury(
    client: redis.Redis,
    queue: str,
    entry_id: str,
    fields: Mapping[str, Any],
    *,
    error: str,
    attempts: int,
    unfinished: list[str],
) -> None:
    """Move the entry to the dead letters, in one transaction."""
    owner = _owner_key(fields)
    letter: dict[Any, Any] = {
        **{str(k): str(v) for k, v in fields.items()},
        "entry": entry_id,
        "error": error,
        "attempts": str(attempts),
        "unfinished": json.dumps(unfinished),
    }
    with client.pipeline(transaction=True) as pipe:
        pipe.xadd(dead_key(queue), letter)
        pipe.xack(stream_key(queue), GROUP, entry_id)
        pipe.xdel(stream_key(queue), entry_id)
        pipe.hdel(attempts_key(queue), entry_id)
        if owner is not None:
            pipe.hincrby(owner, "dead_letters", 1)
        if fields.get("kind") == "run":
            pipe.hset(owner or run_key(str(fields.get("run", ""))), "state", "dead_letter")
        elif unfinished:
            pipe.sadd(batch_key(str(fields.get("batch", "")), "dead"), *unfinished)
        pipe.execute()


def _owner_key(fields: Mapping[str, Any]) -> str | None:
    """The batch or run hash an entry belongs to."""
    if fields.get("kind") == "run" and fields.get("run"):
        return run_key(str(fields["run"]))
    if fields.get("batch"):
        return batch_key(str(fields["batch"]))
    return None


def dead_letters(client: redis.Redis, queue: str, *, owner: str) -> list[dict[str, Any]]:
    """The dead letters of ``queue`` that belong to batch or run ``owner``."""
    found = []
    letters: Any = client.xrange(dead_key(queue))
    for entry_id, fields in letters:
        if owner in (fields.get("batch"), fields.get("run")):
            found.append(
                {
                    "entry": fields.get("entry", entry_id),
                    "chunk": fields.get("chunk"),
                    "error": fields.get("error", ""),
                    "attempts": int(fields.get("attempts", 0)),
                    "unfinished": json.loads(fields.get("unfinished", "[]")),
                }
            )
    return found
