"""Validate many items at once with bounded concurrency: ``batch_cross_validate`` (the seed's name).

A batch is many short validation graphs, not one: the items are cut into chunks of a bounded
number of distinct texts (:mod:`multiagent.graphs.batch_chunks`), and chunks run a few at a
time (:mod:`multiagent.graphs.batch_pool`), so every step costs the same per item whatever the
batch's size. Each finished chunk is stored (:mod:`multiagent.graphs.batch_store`) before the
next is counted as done. Under a budget, a chunk is given an item only while the budget's room
covers the item's worst case, and the batch stops as ``budget_exceeded`` once none runs and the
next item still does not fit (:mod:`multiagent.graphs.batch_pool`).

When the provider goes away, a chunk comes back with items no validator answered; the batch
then starts no new chunk, lets the running ones end, and stops as ``failed`` with the unfinished
item ids named. On Ctrl-C it starts no new chunk or call, stores what the running chunks
finished (and the usage of every call paid for) and stops as ``interrupted``. A chunk ended by
an error nobody expected (a bug in a node) is stored as a stopped one is, its verdicts paid for
kept; the batch starts no new chunk, stores the running ones as they end, and raises the error.

An item some of whose validators failed after retries is decided by the others, as in a single
run, and is *incomplete*: the batch names it and how to resume. Resuming (``resume=True`` with
the same store and batch id) runs exactly the unfinished items, and completes the incomplete
ones as a single run's ``--resume`` does: only their failed validators are asked again, the
verdicts given are kept and the item is decided anew
(:func:`~multiagent.graphs.batch_chunks.complete_chunk`). An unfinished item a stopped chunk
left with verdicts paid for (a partial record) is completed the same way, asking only the
validators not asked yet. Items fully decided are not run again.
Identical items are validated once; verdicts on content seen before come from the analysis cache
when the context has one. A JSONL batch file is read by :mod:`multiagent.graphs.batch_file`.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from langchain_core.callbacks import BaseCallbackHandler

from multiagent._interrupt import terminated
from multiagent.errors import UsageError
from multiagent.graphs.batch_budget import check_resume_budget, completing_worst_case
from multiagent.graphs.batch_chunks import DEFAULT_CHUNK_SIZE, plan_chunks
from multiagent.graphs.batch_pool import Progress, run_chunks
from multiagent.graphs.batch_records import ItemRecord, asked_again
from multiagent.graphs.batch_store import BatchManifest, BatchStore, MemoryBatchStore
from multiagent.graphs.inputs import validation_input
from multiagent.graphs.run_outcome import WorkflowOutcome
from multiagent.graphs.workflows import new_thread_id
from multiagent.models.ledger import RunLedger
from multiagent.nodes.context import WorkflowContext, build_context
from multiagent.nodes.input_defaults import validation_items
from multiagent.nodes.state import ItemResult, ValidationItem, ValidatorFailure, Verdict
from multiagent.nodes.usage import Usage, total_usage
from multiagent.policies import Settings, load_settings
from multiagent.safety import check_id_private


@dataclass
class BatchValidation:
    """The outcome of :func:`batch_cross_validate`; ``results`` are in input order.

    ``unfinished`` names the items no validator answered (the batch stopped before them, or
    the provider failed them); they run when the batch is resumed. ``incomplete`` names the
    items decided on fewer validators than asked (the others failed after retries); a resume
    asks only those validators again.
    """

    results: list[ItemResult]
    verdicts: list[Verdict]
    failures: list[ValidatorFailure]
    usage: dict[str, Any]
    seconds: float
    status: str
    thread_id: str
    outcome: WorkflowOutcome
    unfinished: list[str] = field(default_factory=list)
    incomplete: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Assembled:
    """A batch's stored progress, in input order."""

    results: list[ItemResult]
    verdicts: list[Verdict]  # each distinct text's once
    failures: list[ValidatorFailure]
    usage: list[Usage]
    unfinished: list[str]  # no record, or a partial one: validators to ask yet
    incomplete: list[str]  # a record, decided without the validators that failed


def _assemble(manifest: BatchManifest, store: BatchStore) -> _Assembled:
    """Results in input order, each distinct verdict once, usage, the unfinished and the
    incomplete ids."""
    records = store.records(manifest.batch_id)
    results: list[ItemResult] = []
    verdicts: list[Verdict] = []
    failures: list[ValidatorFailure] = []
    unfinished: list[str] = []
    incomplete: list[str] = []
    seen: set[str] = set()
    for item in manifest.items:
        record: ItemRecord | None = records.get(item["id"])
        if record is None or record.partial:  # a partial record's verdicts wait for the rest
            unfinished.append(item["id"])
            continue
        results.append(record.result)
        if record.failed_validators(item):
            incomplete.append(item["id"])
        key = record.verdicts[0]["key"] if record.verdicts else item["id"]
        if key not in seen:  # identical items share their verdicts: list them once
            seen.add(key)
            verdicts.extend(record.verdicts)
            failures.extend(record.failures)
    usage = store.usage(manifest.batch_id)
    return _Assembled(results, verdicts, failures, usage, unfinished, incomplete)


def describe_unfinished(ids: Sequence[str], *, shown: int = 20, what: str = "unfinished") -> str:
    """``"3 items unfinished: a, b, c"``, naming at most ``shown`` of them."""
    named = ", ".join(ids[:shown])
    more = f" and {len(ids) - shown} more" if len(ids) > shown else ""
    return f"{len(ids)} item{'s' if len(ids) != 1 else ''} {what}: {named}{more}"


def describe_incomplete(ids: Sequence[str]) -> str:
    """What a batch with incomplete items says: which, and what a resume does for them."""
    what = "incomplete (validators gave no verdict)"
    return f"{describe_unfinished(ids, what=what)}; --resume asks only those validators again"


def batch_cross_validate(
    items: Sequence[str | ValidationItem] | None,
    *,
    settings: Settings | None = None,
    validators: int | Sequence[str] | None = None,
    threshold: float | None = None,
    max_concurrency: int | None = None,
    context: WorkflowContext | None = None,
    store: BatchStore | None = None,
    thread_id: str | None = None,
    resume: bool = False,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    on_progress: Progress | None = None,
    callbacks: Sequence[BaseCallbackHandler] | None = None,
) -> BatchValidation:
    """Cross-validate every item in bounded chunks; return each item's consensus in input order.

    Args:
        items: Texts, or ``{"id": ..., "text": ...}`` items; ``None`` (or the same items) to
            resume.
        settings: Resolved settings; default :func:`multiagent.load_settings`.
        validators: How many validators per item (within the profile's bounds), or their names.
        threshold: Consensus threshold in (0, 1]; default the profile's.
        max_concurrency: Validator calls in flight at once; default the profile's
            ``rate_limit.max_concurrency``.
        context: A run context to use (to share a pipeline, ledger budget or analysis cache).
        store: Where the batch keeps its progress (e.g. :class:`~multiagent.graphs.batch_store.
            SqliteBatchStore` to resume it from another process); default: in memory.
        thread_id: The batch's id; default a new one.
        resume: Continue batch ``thread_id`` of ``store``: run only its unfinished items.
        chunk_size: Distinct texts per chunk (one short graph run each).
        on_progress: Called with ``(finished items, all items)`` after each stored chunk.
        callbacks: LangChain callback handlers for the chunk runs (tracing, counting calls).

    Raises:
        UsageError: No items, an empty text, repeated ids, validators/threshold out of range,
            a resume of an unknown batch, a new batch reusing an id, or (with a profile that
            redacts) a batch id holding personal data.
    """
    settings = settings or load_settings()
    context = context or build_context(settings)
    store = store if store is not None else MemoryBatchStore()
    limit = (
        settings.profile.rate_limit.max_concurrency if max_concurrency is None else max_concurrency
    )
    if limit < 1:
        raise UsageError(f"max_concurrency must be at least 1, got {limit}")
    if chunk_size < 1:
        raise UsageError(f"chunk size must be at least 1, got {chunk_size}")
    if thread_id:  # stored as given: the manifest's key, the chunks' trace names
        check_id_private(
            thread_id, kind="batch id", source="--thread",
            redacting=settings.profile.features.pii_redaction,
        )  # fmt: skip
    batch_id = thread_id or new_thread_id("validation")
    manifest = store.manifest(batch_id)
    if resume and manifest is None:
        raise UsageError(f"unknown batch {batch_id!r}; nothing to resume")
    if not resume and manifest is not None:
        raise UsageError(f"batch {batch_id!r} already exists; add --resume to continue it")
    if manifest is None:
        if items is None:
            raise UsageError("nothing to validate; give at least one text")
        inputs = validation_input(
            items, settings=settings, agents=context.agents, validators=validators,
            threshold=threshold,
        )  # fmt: skip
        manifest = BatchManifest(
            batch_id=batch_id, items=validation_items(inputs["items"]),
            validators=inputs["validators"],
            threshold=inputs["threshold"], chunk_size=chunk_size,
        )  # fmt: skip
        store.create(manifest)
    began = time.perf_counter()
    budget = context.ledger.budget_usd
    if resume and budget is not None:  # the batch's budget covers all its runs, as a thread's
        spent_before = sum(entry["cost_usd"] for entry in store.usage(batch_id))
        context = dataclasses.replace(
            context, ledger=RunLedger(budget_usd=max(0.0, budget - spent_before))
        )
    stored = store.records(batch_id)
    todo = [item for item in manifest.items if item["id"] not in stored]
    # stored items decided without validators that failed: completed before new items start
    completing = [
        i for i in manifest.items if i["id"] in stored and stored[i["id"]].failed_validators(i)
    ]
    retries = deque(plan_chunks(completing, chunk_size=1))
    if resume and budget is not None and (completing or todo):  # one that runs nothing is bad input
        first = (completing or todo)[0]
        worst = completing_worst_case(context, manifest.validators, asked_again([first], stored))
        check_resume_budget(
            batch_id=batch_id, budget=budget, spent=spent_before, item=first,
            worst=worst(first["text"]),
        )  # fmt: skip
    attempt = uuid.uuid4().hex[:6]  # chunk ids of a resume never meet those of earlier runs
    status, stopped, ledger = run_chunks(
        deque(plan_chunks(todo, chunk_size=1)), retries=retries, records=stored,
        manifest=manifest, store=store, context=context, limit=limit,
        prefix=f"{batch_id}:{attempt}", callbacks=callbacks, on_progress=on_progress,
        finished=sum(1 for record in stored.values() if not record.partial),
    )  # fmt: skip
    kept = _assemble(manifest, store)
    unfinished, incomplete = kept.unfinished, kept.incomplete
    message = error = None
    if status == "interrupted" and not unfinished:  # Ctrl-C came after the last item finished
        status = "completed" if stopped is None else stopped.status
    if status == "interrupted":
        by = "SIGTERM" if terminated() else "Ctrl-C"
        message = f"stopped by {by}; {describe_unfinished(unfinished)}"
        error = "KeyboardInterrupt"
    elif stopped is not None:
        message = (
            f"{stopped.message or 'a chunk did not finish'}; {describe_unfinished(unfinished)}"
        )
        error = stopped.error
    if incomplete:  # decided on fewer validators than asked: say how to complete them
        message = "; ".join(filter(None, [message, describe_incomplete(incomplete)]))
    seconds = round(time.perf_counter() - began, 4)
    values: dict[str, Any] = {
        "items": manifest.items, "validators": manifest.validators,
        "threshold": manifest.threshold, "results": kept.results, "verdicts": kept.verdicts,
        "failures": kept.failures, "usage": kept.usage, "unfinished": unfinished,
        "incomplete": incomplete,
    }  # fmt: skip
    outcome = WorkflowOutcome(
        workflow="validation", thread_id=batch_id, status=status, values=values, ledger=ledger,
        seconds=seconds, message=message or "", error=error, resumed=resume,
    )  # fmt: skip
    return BatchValidation(
        results=kept.results,
        verdicts=kept.verdicts,
        failures=kept.failures,
        usage=total_usage(kept.usage),
        seconds=seconds,
        status=status,
        thread_id=batch_id,
        outcome=outcome,
        unfinished=unfinished,
        incomplete=incomplete,
    )
