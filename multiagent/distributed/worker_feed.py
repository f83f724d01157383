"""The feeder of a queue worker: a few entries taken ahead, each with its batch's state.

First an entry another worker left pending for longer than ``claim_idle_ms`` (``XAUTOCLAIM``:
that worker died, or the entry failed and waits for its retry), else new ones
(``XREADGROUP``, as many as there is room for); then the batch state of every taken chunk
(stopped, or superseded by a resume? which items are stored already, which kept partial?) in
one pipeline, so a slot starts without a round trip. A reclaimed entry may be one that kills its
worker: while one is held nothing else is taken ahead (see :mod:`multiagent.distributed.worker`).
A queue that Redis lost (restarted without its data) is created again, said once, and read on;
the batches it held are lost.

:func:`claim_own` keeps entries fresh for the heartbeat, only those still this worker's: a
worker frozen (SIGSTOP, a long pause) past the claim idle time finds its entries taken over by
another, and leaves them to it instead of taking them back.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import redis
from redis.exceptions import RedisError, ResponseError

from multiagent.distributed.deadletter import bury_redelivered, times_delivered
from multiagent.distributed.queue import GROUP, ensure_group, finished_of, stream_key
from multiagent.distributed.worker_state import (
    TakenEntry,
    WorkerState,
    ask_entry_state,
    entry_check,
    item_ids,
)

#: How long a read blocks waiting for new entries; also how soon a stop is noticed when idle.
READ_BLOCK_MS = 500
#: A consumer with nothing pending that has not read for this many ``claim_idle_ms`` is gone.
GONE_CLAIMS = 10

# Re-claim (idle time back to 0) each entry still pending to this consumer; return those.
# In one script: an entry another worker takes over is never claimed back in between.
_CLAIM_OWN = """
local ours = {}
for i = 3, #ARGV do
  local found = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
  if found[1] and found[1][2] == ARGV[2] then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')
    ours[#ours + 1] = ARGV[i]
  end
end
return ours
"""


def claim_own(client: redis.Redis, stream: str, consumer: str, ids: list[str]) -> set[str]:
    """Keep ``ids`` fresh for ``consumer``, those still pending to it; return those.

    An entry acknowledged meanwhile, or taken over by another worker (``XAUTOCLAIM`` once this
    one had been silent for the claim idle time), is left alone: a plain ``XCLAIM`` took it
    back, and both workers ran it.
    """
    if not ids:
        return set()
    found: Any = client.eval(_CLAIM_OWN, 1, stream, GROUP, consumer, *ids)
    return {e.decode() if isinstance(e, bytes) else str(e) for e in found}


class EntryFeeder:
    """Takes entries for one consumer of ``queue`` and puts them on ``state.ready``."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        queue: str,
        consumer: str,
        state: WorkerState,
        prefetch: int,
        claim_idle_ms: int,
        max_attempts: int,
    ) -> None:
        self.client = client
        self.queue = queue
        self.stream = stream_key(queue)
        self.consumer = consumer
        self.state = state
        self.prefetch = prefetch
        self.claim_idle_ms = claim_idle_ms
        self.max_attempts = max_attempts
        self._next_claim = 0.0  # monotonic time of the next look for abandoned entries
        self._next_forget = 0.0  # monotonic time of the next look for consumers gone

    def run(self, *, idle_exit_ms: int | None) -> None:
        """Feed until stopped (or, with ``idle_exit_ms``, until the queue stays that long empty)."""
        state = self.state
        idle_ms = 0
        failing: str | None = None  # the Redis error being retried, if any
        try:
            while not state.stop.is_set():
                state.space.clear()
                with state.lock:
                    suspect = bool(state.suspects)
                room = 0 if suspect else self.prefetch - state.ready.qsize()
                if room <= 0:
                    state.space.wait(READ_BLOCK_MS / 1000)
                    continue
                try:
                    taken = self._take(room)
                except RedisError as exc:
                    if state.stop.is_set():  # stopping: nothing more to take
                        break
                    if _lost_queue(exc) and self._recreate():
                        continue
                    if str(exc) != failing:  # said once, not once a second while it lasts
                        failing = str(exc)
                        print(
                            f"worker: Redis error, retrying every second: {exc}",
                            file=sys.stderr,
                            flush=True,
                        )
                    state.stop.wait(1.0)
                    continue
                if failing is not None:
                    failing = None
                    print("worker: Redis answers again", file=sys.stderr, flush=True)
                if taken:
                    idle_ms = 0
                    for entry in taken:
                        state.ready.put(entry)
                    continue
                with state.lock:
                    busy = bool(state.in_flight)
                idle_ms = 0 if busy else idle_ms + READ_BLOCK_MS
                if idle_exit_ms is not None and idle_ms >= idle_exit_ms:
                    return
        finally:
            state.fed.set()

    def _recreate(self) -> bool:
        """Recreate the queue's stream and group, which Redis lost (a restart without its data);
        say so once. The batches it held are lost with it: no worker can finish them."""
        try:
            ensure_group(self.client, self.queue)
            self.client.xgroup_createconsumer(self.stream, GROUP, self.consumer)
        except RedisError:
            return False
        print(
            f"worker: Redis lost queue {self.queue} (restarted without its data?); recreated "
            "it, waiting for work",
            file=sys.stderr,
            flush=True,
        )
        return True

    def _take(self, room: int) -> list[TakenEntry]:
        """One abandoned entry (claimed from a dead worker) or up to ``room`` new ones; none when
        idle. Each is this worker's (in flight, heartbeat) from here until stored."""
        state = self.state
        taken: list[TakenEntry] = []
        while state.ready.empty() and time.monotonic() >= self._next_claim:
            claimed: Any = self.client.xautoclaim(
                self.stream, GROUP, self.consumer, self.claim_idle_ms, start_id="0-0", count=1
            )
            if not claimed[1]:
                # an entry becomes abandoned only after claim_idle_ms: look a few times per
                # claim_idle_ms (and whenever idle), not once per entry
                self._next_claim = time.monotonic() + self.claim_idle_ms / 4000
                self._forget_gone()
                break
            entry_id, fields = claimed[1][0]
            entry_id = str(entry_id)
            if not fields:  # an entry deleted meanwhile comes back without fields
                continue
            if not self._buried(entry_id, dict(fields)):
                taken.append(TakenEntry(entry_id, dict(fields), reclaimed=True))
                with state.lock:
                    state.suspects.add(entry_id)
                break
        if not taken:
            replies: Any = self.client.xreadgroup(
                GROUP, self.consumer, {self.stream: ">"}, count=room, block=READ_BLOCK_MS
            )
            for _stream, entries in replies or []:
                taken += [TakenEntry(str(i), dict(f), reclaimed=False) for i, f in entries]
            if not taken:
                self._next_claim = 0.0  # idle: look for abandoned entries at once
        with state.lock:
            for entry in taken:
                state.hold([entry.entry_id], at=entry.taken_at)
        self._check(taken)
        return taken

    def _forget_gone(self) -> None:
        """Delete the group's consumers that are gone: none pending, no read for
        :data:`GONE_CLAIMS` × ``claim_idle_ms``.

        Each worker reads as a consumer of its own (host and pid), and Redis keeps a consumer
        until it is deleted: without this, every worker ever killed stayed listed in
        ``XINFO CONSUMERS``. A consumer with nothing pending owns nothing, so deleting one loses
        no entry; a live worker reads every :data:`READ_BLOCK_MS` while it has room (and holds
        pending entries while it has none), and a read would make it again anyway.
        """
        now = time.monotonic()
        if now < self._next_forget:
            return
        self._next_forget = now + self.claim_idle_ms / 1000
        consumers: Any = self.client.xinfo_consumers(self.stream, GROUP)
        gone_ms = GONE_CLAIMS * self.claim_idle_ms
        for consumer in consumers:
            name = str(consumer.get("name"))
            pending, idle = int(consumer.get("pending", 0)), int(consumer.get("idle", 0))
            if name != self.consumer and pending == 0 and idle > gone_ms:
                self.client.xgroup_delconsumer(self.stream, GROUP, name)

    def _check(self, taken: list[TakenEntry]) -> None:
        """Read the batch state of every taken chunk in one pipeline."""
        chunks = [entry for entry in taken if entry.fields.get("kind") != "run"]
        if not chunks:
            return
        ids = [item_ids(entry.fields) for entry in chunks]
        with self.client.pipeline(transaction=False) as pipe:
            for entry, its in zip(chunks, ids, strict=True):
                ask_entry_state(pipe, str(entry.fields.get("batch", "")), its)
            replies = pipe.execute()
        checks = [
            entry_check(entry.fields, its, replies[3 * n : 3 * n + 3])
            for n, (entry, its) in enumerate(zip(chunks, ids, strict=True))
        ]
        with self.state.lock:
            for entry, check in zip(chunks, checks, strict=True):
                self.state.checked[entry.entry_id] = check

    def _buried(self, entry_id: str, fields: dict[str, str]) -> bool:
        """Dead-letter a reclaimed entry delivered more than ``max_attempts`` times."""
        delivered = times_delivered(self.client, self.queue, entry_id)
        if delivered <= self.max_attempts:
            return False
        unfinished: list[str] = []
        if fields.get("kind") != "run":
            ids = item_ids(fields)
            done = finished_of(self.client, str(fields.get("batch", "")), ids)
            unfinished = [item for item in ids if item not in done]
        bury_redelivered(
            self.client, self.queue, entry_id, fields, delivered=delivered,
            unfinished=unfinished, max_attempts=self.max_attempts,
        )  # fmt: skip
        self.state.stats.add(dead_letters=1)
        return True


def _lost_queue(exc: RedisError) -> bool:
    """Whether ``exc`` says the queue's stream or consumer group does not exist."""
    return isinstance(exc, ResponseError) and "NOGROUP" in str(exc)
