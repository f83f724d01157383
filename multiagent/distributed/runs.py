"""Orchestration runs on the same Redis queue as batches; their threads in PostgreSQL.

``multiagent run TASK --queue NAME`` stores the checked input under ``run:{ID}`` (the run id is
its thread id) and adds one entry (``kind=run``) to the queue's stream. A worker that takes the
entry runs the thread in the configured checkpointer, which must be shared by every worker
(``MULTIAGENT_CHECKPOINT_URL``, PostgreSQL): when the thread already has checkpoints (a worker
died mid-run) it resumes from the last one, so the nodes that finished are not run again. The
run's report (output, usage, thread id) is stored once (``HSETNX``) before the entry is
acknowledged; ``multiagent batch status|results ID`` reads it from anywhere.

The report's usage is its thread's (every run of it: :mod:`multiagent.persistence.run_usage`) as
its worker ended. A worker frozen mid-run and resumed after another took the run over stops at
its next call or write (:mod:`.entry_guard`), but the calls it had in flight were served and
paid, and it records them beside the thread only then, maybe after the report was stored. So
every worker that ended an attempt (stored, or taken over) keeps the thread's usage as it reads
it then (:func:`keep_run_usage`), and the one counting the most calls stays: a thread's usage
only grows, and the last attempt to record reads every attempt's.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from typing import Any

import redis

from multiagent.distributed.deadletter import dead_letters, run_key
from multiagent.distributed.queue import batch_key, check_queue_name, ensure_group, stream_key
from multiagent.errors import UsageError
from multiagent.graphs.workflows import Workflow, new_thread_id
from multiagent.policies import Settings

#: A run id is its thread id: letters, digits, ``_.:-``, no spaces.
_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}")
#: A run's outcome that retrying cannot change: stored, acknowledged.
FINAL = frozenset({"completed", "rejected", "budget_exceeded", "awaiting_approval"})


def require_checkpoint_url(settings: Settings) -> str:
    """The shared checkpointer's URL; one line (exit 2) when unset or not PostgreSQL."""
    url = settings.checkpoint_url
    if not url or not url.startswith(("postgresql://", "postgres://")):
        shown = "unset" if not url else "not a postgresql:// URL"
        raise UsageError(
            f"queued runs keep their threads where every worker reaches them: set "
            f"MULTIAGENT_CHECKPOINT_URL=postgresql://USER@HOST:PORT/DB (it is {shown})"
        )
    return url


@dataclass(frozen=True)
class QueuedRun:
    """A run put on a queue."""

    run_id: str
    queue: str
    workflow: Workflow


def enqueue_run(
    client: redis.Redis,
    *,
    queue: str,
    workflow: Workflow,
    inputs: dict[str, Any] | None,
    thread_id: str | None = None,
) -> QueuedRun:
    """Store a checked run and add its entry to ``queue``; ``inputs=None`` resumes the thread.

    Raises:
        UsageError: A bad queue name or thread id, or a run id already queued (and not
            being resumed).
    """
    check_queue_name(queue)
    run_id = thread_id or new_thread_id(workflow)
    if not _RUN_ID.fullmatch(run_id):
        raise UsageError(f"invalid --thread {run_id!r}: letters, digits, '_.:-', no spaces")
    if inputs is not None and client.exists(run_key(run_id)):
        raise UsageError(f"run {run_id!r} is already queued; add --resume to run it again")
    if client.exists(batch_key(run_id)):  # `batch status ID` would name the run, not the batch
        raise UsageError(f"{run_id!r} is a queued batch's id; choose a new --thread id")
    ensure_group(client, queue)
    fields: dict[Any, Any] = {
        "workflow": workflow,
        "queue": queue,
        "state": "queued",
        "queued_at": time.time(),
        "failures": 0,
    }
    if inputs is not None:
        fields["inputs"] = json.dumps(inputs)
    with client.pipeline(transaction=True) as pipe:
        # a resume reports afresh
        pipe.hdel(run_key(run_id), "result", "last_error", "usage", "usage_calls")
        pipe.hset(run_key(run_id), mapping=fields)
        pipe.xadd(stream_key(queue), {"kind": "run", "run": run_id})
        pipe.execute()
    return QueuedRun(run_id=run_id, queue=queue, workflow=workflow)


def is_run(client: redis.Redis, some_id: str) -> bool:
    """Whether ``some_id`` names a queued run (else it may be a batch)."""
    return bool(_RUN_ID.fullmatch(some_id)) and bool(client.exists(run_key(some_id)))


def load_run(client: redis.Redis, run_id: str) -> dict[str, str]:
    """The stored fields of run ``run_id``; one line naming it when there is none."""
    meta = client.hgetall(run_key(run_id)) if _RUN_ID.fullmatch(run_id) else {}
    if not meta:
        raise UsageError(f"unknown batch or run {run_id!r}; use the id printed when it was queued")
    return {str(k): str(v) for k, v in meta.items()}


def store_run_result(client: redis.Redis, run_id: str, report: dict[str, Any]) -> bool:
    """Keep a run's report once; return whether this call stored it."""
    with client.pipeline(transaction=True) as pipe:
        pipe.hsetnx(run_key(run_id), "result", json.dumps(report))
        pipe.hset(run_key(run_id), mapping={"state": report["status"], "finished_at": time.time()})
        stored, _ = pipe.execute()
    return bool(stored)


# A stored run's usage, replaced only by one counting more calls (a thread's usage only grows: a
# worker reading it later reads at least as many recorded calls). In one script: two workers
# keeping theirs at once leave the larger.
_KEEP_USAGE = """
if redis.call('HEXISTS', KEYS[1], 'result') == 0 then return 0 end
local kept = tonumber(redis.call('HGET', KEYS[1], 'usage_calls') or ARGV[3])
if tonumber(ARGV[2]) <= kept then return 0 end
redis.call('HSET', KEYS[1], 'usage', ARGV[1], 'usage_calls', ARGV[2])
return 1
"""


def keep_run_usage(client: redis.Redis, run_id: str, usage: dict[str, Any]) -> bool:
    """Keep ``usage`` (the thread's, read now) as the stored run's when it counts more calls
    than the usage kept so far (its report's); return whether it did. A run with no report
    stored yet keeps nothing: the report, when stored, reads the thread afresh."""
    result = client.hget(run_key(run_id), "result")
    reported = json.loads(str(result)).get("usage") if result is not None else None
    calls = int((reported or {}).get("calls", -1))
    kept = client.eval(_KEEP_USAGE, 1, run_key(run_id), json.dumps(usage), usage["calls"], calls)
    return bool(kept)


def _usage_of(meta: dict[str, str], result: dict[str, Any] | None) -> Any:
    """The run's usage: kept afresh after its report (:func:`keep_run_usage`), else the
    report's."""
    if "usage" in meta:
        return json.loads(meta["usage"])
    return None if result is None else result.get("usage")


def run_status(client: redis.Redis, run_id: str) -> dict[str, Any]:
    """How far run ``run_id`` is: queued, running, completed, failed, dead-lettered."""
    meta = load_run(client, run_id)
    queue = meta.get("queue", "")
    result = json.loads(meta["result"]) if "result" in meta else None
    return {
        "id": run_id,
        "kind": "run",
        "workflow": meta.get("workflow"),
        "thread_id": run_id,
        "queue": queue,
        "state": meta.get("state", "queued"),
        "failures": int(meta.get("failures", 0)),
        "worker": meta.get("worker"),
        "last_error": meta.get("last_error"),
        "dead_letters": dead_letters(client, queue, owner=run_id) if queue else [],
        "output": None if result is None else result.get("output"),
        "usage": _usage_of(meta, result),
    }


def run_results(client: redis.Redis, run_id: str) -> dict[str, Any]:
    """The run's stored report (``--json`` of ``multiagent run``), or its status if not done."""
    meta = load_run(client, run_id)
    if "result" not in meta:
        return {**run_status(client, run_id), "result": None}
    result = json.loads(meta["result"])
    return {
        "id": run_id, "kind": "run", "state": meta.get("state"), **result,
        "usage": _usage_of(meta, result),
    }  # fmt: skip
