"""Resume a queued batch stopped on its budget: a larger total, and its unfinished items queued
again for the workers; and complete a batch's items whose validators failed after retries.

A queued batch whose budget left no room for its next item stops as ``budget_exceeded``: its
remaining entries are acknowledged unrun, so nothing would ever finish its unfinished items.
:func:`resume_batch` raises the batch's cap in Redis to the new total (what was spent before
included, as a local batch's ``--resume --budget`` counts it), clears the stop, and puts the
items that have no record and were not dead-lettered back on the batch's queue; an item its
chunk left partial (some validators answered, the others not asked yet) is among them, and the
worker asks only those others. Dead-lettered items stay so: they failed ``--max-attempts``
times, and a larger budget does not mend that.

All of it is one script (:data:`_RESUME`), checked and written atomically on the server:

- only a batch still stopped resumes, so of two resumes the second finds it running, refused;
- none of its entries may be pending (taken by a worker): a worker still finishing an item
  admitted before the stop would store it while its copy runs again, and one that ends in the
  stop would mark the resumed batch stopped; the resume is refused until they have ended
  (seconds: a stopped batch's entries are acknowledged unrun);
- the new total must leave, over what is spent and held, the worst case of the next item (the
  first a worker would admit, on the same test): a resume that could admit none would stop
  again at once having run nothing, and is refused naming the least total that runs one more;
- the records and dead letters the caller counted to choose the items must be those of the
  moment the script runs (else the caller counts again);
- the batch's entries not yet taken are superseded rather than searched for: each entry carries
  the number of the resume that queued it (``resume``, none for the first), the batch the number
  of its latest (``resumes``), and a worker acknowledges unrun an entry of an earlier one
  (:func:`entry_current`); their items were queued again with the others.

So every item is run by one entry at a time, and the batch's results and usage (kept per item
and per chunk attempt) cover it once, before and after the resume.

An item some of whose validators failed after retries is stored decided by the others, as a
local batch's is, and *incomplete*. A resume (of a batch stopped on its budget, or of one that
ended: completed, or the rest dead-lettered) also queues these items, in entries marked
``complete``: a worker asks only their failed validators again, keeps the verdicts given and
stores each item decided anew in place of its record (:func:`~multiagent.graphs.batch_chunks.
complete_chunk`, the single run's rule). A batch still running is not completed (its entries
not yet taken would be superseded); a budget is then optional: without one the cap stays.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import redis

from multiagent.distributed.queue import (
    GROUP,
    batch_key,
    check_queue_name,
    ensure_group,
    load_manifest,
    stream_key,
)
from multiagent.errors import UsageError
from multiagent.graphs.batch_budget import resume_refusal
from multiagent.graphs.batch_chunks import plan_chunks
from multiagent.graphs.batch_records import ItemRecord
from multiagent.graphs.batch_store import BatchManifest
from multiagent.models.budget_redis import NANO, RUN_TTL_S, budget_key, to_nano
from multiagent.nodes.state import ValidationItem

#: Tries of a resume whose batch changed between counting its items and the script.
_TRIES = 5

# Shared by the resume and the running check: how many entries of batch ``batch`` are pending
# in ``stream`` (taken by a worker of ``group``, not yet ended); a queue's pending entries are
# its running ones (and those waiting for a retry), few.
_RUNNING = """
local function running(stream, group, batch)
  local count = 0
  for _, p in ipairs(redis.call('XPENDING', stream, group, '-', '+', 1000000)) do
    local found = redis.call('XRANGE', stream, p[1], p[1])
    if found[1] then
      local f = found[1][2]
      for i = 1, #f, 2 do
        if f[i] == 'batch' and f[i + 1] == batch then count = count + 1 end
      end
    end
  end
  return count
end
"""

#: KEYS: the batch's hash, records, dead set, its queue's stream, its budget's base, holds and
#: leases. ARGV: group, batch id, records counted, dead counted, the new cap in nano-USD ('' to
#: keep the cap as it is), the new budget in USD, the budget's TTL, the worst case of the next
#: item in nano-USD, how many of the new entries complete stored items (they come first; with
#: any, a batch not stopped resumes too), then the new entries' items (JSON each). Returns
#: {'resumed', resume number, spent, held} or why not: {'not_stopped'}, {'changed'},
#: {'running', count}, {'small', spent, held} (nano-USD; holds whose lease ended left out, as
#: the budget's report does): the cap leaves no room for the next item's hold, which a worker's
#: admission, on the same test, would refuse at once.
_RESUME = (
    _RUNNING
    + """
local completing = tonumber(ARGV[9])
if redis.call('HGET', KEYS[1], 'stopped') ~= 'budget_exceeded' and completing == 0 then
  return {'not_stopped'}
end
if redis.call('HLEN', KEYS[2]) ~= tonumber(ARGV[3])
    or redis.call('SCARD', KEYS[3]) ~= tonumber(ARGV[4]) then
  return {'changed'}
end
local busy = running(KEYS[4], ARGV[1], ARGV[2])
if busy > 0 then return {'running', busy} end
local spent, held = 0, 0
if ARGV[5] ~= '' then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  spent = tonumber(redis.call('HGET', KEYS[5], 'spent') or '0')
  local holds = redis.call('HGETALL', KEYS[6])
  for i = 1, #holds, 2 do
    if tonumber(redis.call('ZSCORE', KEYS[7], holds[i]) or '0') > now then
      held = held + tonumber(string.match(holds[i + 1], '^(%d+)'))
    end
  end
  if spent + held + tonumber(ARGV[8]) > tonumber(ARGV[5]) then return {'small', spent, held} end
  redis.call('HSET', KEYS[5], 'cap', ARGV[5])
  redis.call('EXPIRE', KEYS[5], tonumber(ARGV[7]))
  redis.call('HSET', KEYS[1], 'budget_usd', ARGV[6])
end
redis.call('HDEL', KEYS[1], 'stopped', 'last_error')
local resume = redis.call('HINCRBY', KEYS[1], 'resumes', 1)
redis.call('HINCRBY', KEYS[1], 'chunks', #ARGV - 9)
for i = 10, #ARGV do
  local n = i - 10
  if n < completing then
    redis.call('XADD', KEYS[4], '*', 'batch', ARGV[2], 'chunk', 'r' .. resume .. 'k' .. n,
               'items', ARGV[i], 'resume', resume, 'complete', '1')
  else
    redis.call('XADD', KEYS[4], '*', 'batch', ARGV[2], 'chunk',
               'r' .. resume .. 'c' .. (n - completing), 'items', ARGV[i], 'resume', resume)
  end
end
return {'resumed', resume, spent, held}
"""
)

#: KEYS[1] the stream; ARGV: group, batch id. How many of the batch's entries are pending.
_COUNT_RUNNING = _RUNNING + "return running(KEYS[1], ARGV[1], ARGV[2])\n"


@dataclass(frozen=True)
class Resumed:
    """A queued batch resumed: its unfinished items (``items``) back on its queue, and its
    ``incomplete`` ones to complete."""

    batch_id: str
    queue: str
    items: int
    chunks: int
    budget_usd: float | None
    spent_usd: float
    held_usd: float
    incomplete: int = 0


def entry_current(fields: Mapping[str, Any], resumes: Any) -> bool:
    """Whether a batch's entry was queued by the batch's latest resume (``resumes``: the
    batch's field, ``None`` before any); an earlier one's items were queued again."""
    return str(fields.get("resume") or 0) == str(resumes or 0)


def running_entries(client: redis.Redis, batch_id: str) -> int:
    """How many entries of ``batch_id`` workers have taken and not yet ended."""
    queue = str(client.hget(batch_key(batch_id), "queue") or "")
    if not queue:
        return 0
    ensure_group(client, queue)
    found: Any = client.eval(_COUNT_RUNNING, 1, stream_key(queue), GROUP, batch_id)
    return int(found)


def incomplete_items(
    manifest: BatchManifest, records: Mapping[Any, Any]
) -> list[tuple[ValidationItem, list[str]]]:
    """The batch's stored items decided without validators that failed, each with the names
    of those validators (what a resume asks again), in input order."""
    found = []
    for item in manifest.items:
        text = records.get(item["id"])
        if text is not None:
            tasks = ItemRecord.from_dict(json.loads(str(text))).failed_validators(item)
            if tasks:
                found.append((item, [task["validator"] for task in tasks]))
    return found


def incomplete_ids(client: redis.Redis, batch_id: str) -> list[str]:
    """The ids of ``batch_id``'s incomplete items (see :func:`incomplete_items`)."""
    manifest = load_manifest(client, batch_id)
    records = client.hgetall(batch_key(batch_id, "records"))
    return [item["id"] for item, _ in incomplete_items(manifest, records)]


def resume_command(batch_id: str, queue: str, *, budgeted: bool) -> str:
    """The command that resumes queued batch ``batch_id``."""
    command = f"multiagent validate --queue {queue} --thread {batch_id} --resume"
    return command + (" --budget USD" if budgeted else "")


def resume_batch(
    client: redis.Redis,
    batch_id: str,
    *,
    queue: str,
    budget_usd: float | None,
    worst_case: Callable[[Sequence[str], str], float | None] | None = None,
) -> Resumed:
    """Resume ``batch_id``, stopped on its budget, under the new total ``budget_usd``: raise
    its cap, clear the stop, queue its unfinished items again; and queue its incomplete items
    (validators failed after retries) to be completed, a batch that ended as well (see the
    module docstring).

    Args:
        client: The Redis client.
        batch_id: The batch.
        queue: The batch's queue.
        budget_usd: The new total, what was spent before included; ``None`` for a batch
            queued without a budget, or to keep the cap of one that only completes items.
        worst_case: The worst case of validating a text with the batch's validators
            (:func:`~multiagent.graphs.batch_budget.item_worst_case`, from the settings the
            workers run with), ``None`` when it cannot be told; the new total must leave room
            for the next item's. Not given, or ``None``: room for any spend at all.

    Raises:
        UsageError: No such batch, another queue than the batch's, a batch neither stopped on
            its budget nor with incomplete items (running, completed, failed), or still
            running with them, a budget given or left out against how the batch was queued,
            one that leaves no room for the next item's worst case after what the batch spent
            and holds, entries of it still running, or nothing left to run (one line each;
            nothing is changed).
    """
    check_queue_name(queue)
    manifest = load_manifest(client, batch_id)  # an unknown id: one line naming it
    meta = client.hgetall(batch_key(batch_id))
    own = str(meta.get("queue", ""))
    if own != queue:
        raise UsageError(f"batch {batch_id!r} is on queue {own!r}, not {queue!r}: --queue {own}")
    budgeted = "budget_usd" in meta
    if not budgeted and budget_usd is not None:
        raise UsageError(
            f"batch {batch_id!r} was queued without --budget (its workers' profile budget "
            "applies): resume it without --budget"
        )
    ensure_group(client, queue)
    for _ in range(_TRIES):
        with client.pipeline(transaction=True) as pipe:
            pipe.hgetall(batch_key(batch_id, "records"))
            pipe.smembers(batch_key(batch_id, "dead"))
            pipe.hget(batch_key(batch_id), "stopped")
            pipe.hgetall(batch_key(batch_id, "partial"))
            records, dead, stopped, partial = pipe.execute()
        finished, dead = set(records), set(dead)
        stopped_here = stopped == "budget_exceeded" and len(finished) < len(manifest.items)
        completing = incomplete_items(manifest, records)
        if not stopped_here and not completing:
            raise _not_stopped(client, batch_id)
        if not stopped_here and len(finished | dead) < len(manifest.items):
            # its entries not yet taken would be superseded, their items left unrun
            raise UsageError(
                f"batch {batch_id!r} is still running; complete its incomplete items once it "
                "has ended (`multiagent batch status` follows it)"
            )
        if stopped_here and budgeted and budget_usd is None:
            raise UsageError(
                f"batch {batch_id!r} stopped on its budget of ${float(meta['budget_usd']):.6f}: "
                "resume it with a larger total, --budget USD"
            )
        todo = (
            [i for i in manifest.items if i["id"] not in finished and i["id"] not in dead]
            if stopped_here
            else []
        )
        if not todo and not completing:
            raise UsageError(
                f"batch {batch_id!r} has nothing to resume: its {len(dead)} unfinished items "
                "were dead-lettered (`multiagent batch results` names them)"
            )
        completions = plan_chunks([item for item, _ in completing], chunk_size=manifest.chunk_size)
        chunks = plan_chunks(todo, chunk_size=manifest.chunk_size)
        # the first item a worker admits (those to complete go first): its worst case must fit
        first, asked = completing[0] if completing else _next_item(todo, partial, manifest)
        worst = None
        if budget_usd is not None and worst_case is not None:
            worst = worst_case(asked, first["text"])
        base = budget_key("batch", batch_id)
        reply: Any = client.eval(
            _RESUME, 7, batch_key(batch_id), batch_key(batch_id, "records"),
            batch_key(batch_id, "dead"), stream_key(queue), base, f"{base}:holds",
            f"{base}:leases", GROUP, batch_id, len(finished), len(dead),
            "" if budget_usd is None else to_nano(budget_usd),
            "" if budget_usd is None else repr(budget_usd), RUN_TTL_S,
            1 if worst is None else to_nano(worst),  # else any room at all
            len(completions), *(json.dumps(chunk) for chunk in [*completions, *chunks]),
        )  # fmt: skip
        outcome = str(reply[0])
        if outcome == "changed":  # an entry ended meanwhile: count again
            continue
        if outcome == "not_stopped":
            raise _not_stopped(client, batch_id)
        if outcome == "running":
            raise UsageError(
                f"batch {batch_id!r} still has entries taken by workers on queue {queue} "
                f"({int(reply[1])}); resume once they have ended (seconds, for a stopped batch)"
            )
        if outcome == "small":
            spent, held = int(reply[1]), int(reply[2])
            if worst is None:
                raise UsageError(
                    f"--budget {budget_usd} USD is not above what batch {batch_id!r} has spent "
                    f"and holds (${spent / NANO:.6f} spent + ${held / NANO:.6f} held): give a "
                    "larger total"
                )
            raise UsageError(
                resume_refusal(
                    batch_id=batch_id, budget=float(budget_usd or 0.0), spent=spent / NANO,
                    held=held / NANO, item=first["id"], worst=worst,
                    least=(spent + held + to_nano(worst)) / NANO,
                )
            )  # fmt: skip
        return Resumed(
            batch_id=batch_id, queue=queue, items=len(todo),
            chunks=len(chunks) + len(completions), budget_usd=budget_usd,
            spent_usd=int(reply[2]) / NANO, held_usd=int(reply[3]) / NANO,
            incomplete=len(completing),
        )  # fmt: skip
    raise UsageError(f"batch {batch_id!r} kept changing while resuming it; try again")


def _next_item(
    todo: list[ValidationItem], partial: Mapping[Any, Any], manifest: BatchManifest
) -> tuple[ValidationItem, list[str]]:
    """The first item of ``todo`` and the validators a worker asks for it: those not asked yet
    when its chunk left it partial, else all of them."""
    first = todo[0]
    text = partial.get(first["id"])
    if text is None:
        return first, manifest.validators
    tasks = ItemRecord.from_dict(json.loads(str(text))).failed_validators(first)
    return first, [task["validator"] for task in tasks]


def _not_stopped(client: redis.Redis, batch_id: str) -> UsageError:
    """One line saying that ``batch_id`` is in another state than stopped on its budget."""
    from multiagent.distributed.queue import batch_status

    state = batch_status(client, batch_id)["state"]
    return UsageError(
        f"batch {batch_id!r} is {state}, not stopped on its budget, and has no incomplete "
        "items: only such a batch resumes"
    )
