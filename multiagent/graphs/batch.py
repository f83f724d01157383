"""Validate many items at once with bounded concurrency: ``batch_cross_validate`` (the seed's name).

A batch is many short validation graphs, not one: the items are cut into chunks of a bounded
number of distinct texts (:mod:`multiagent.graphs.batch_chunks`), and chunks run a few at a
time, so every step costs the same per item whatever the batch's size. Each finished chunk is
stored (:mod:`multiagent.graphs.batch_store`) before the next is counted as done.

Under a budget, a chunk is given an item only while the budget's room covers the item's worst
case (each of its validators' calls at what it reserves:
:class:`~multiagent.graphs.batch_budget.ItemAdmission`). A tight budget is so spent on finishing
items, not on many items part-validated by parallel chunks until every one of them is refused a
call: when the next item does not fit, the batch waits for the running chunks to settle (their
real cost is far below their worst case), and once none runs and it still does not fit, stops
as ``budget_exceeded`` with the unfinished items named, to be finished by a resume with a larger
budget. Every call still reserves its worst case, so settled spend never exceeds the budget.

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
when the context has one.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from langchain_core.callbacks import BaseCallbackHandler

from multiagent._inputs import check_text, item_id_problem, read_text_file
from multiagent._interrupt import stop_requested, terminated
from multiagent.errors import UsageError
from multiagent.graphs.batch_budget import (
    BatchBudget,
    ItemAdmission,
    check_resume_budget,
    completing_worst_case,
)
from multiagent.graphs.batch_chunk_outcome import ChunkOutcome
from multiagent.graphs.batch_chunks import (
    DEFAULT_CHUNK_SIZE,
    complete_chunk,
    plan_chunks,
    run_chunk,
)
from multiagent.graphs.batch_records import ItemRecord, asked_again
from multiagent.graphs.batch_store import BatchManifest, BatchStore, MemoryBatchStore
from multiagent.graphs.inputs import validation_input
from multiagent.graphs.runner import Status, WorkflowOutcome, from_ctrl_c
from multiagent.graphs.workflows import new_thread_id
from multiagent.models.ledger import RunLedger
from multiagent.nodes.context import WorkflowContext, build_context
from multiagent.nodes.input_defaults import validation_items
from multiagent.nodes.state import ItemResult, ValidationItem, ValidatorFailure, Verdict
from multiagent.nodes.usage import Usage, total_usage
from multiagent.policies import Settings, load_settings
from multiagent.safety import check_id_private

#: Reports ``(finished items, all items)`` after every stored chunk.
Progress = Callable[[int, int], None]


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


def concurrency_split(limit: int, *, validators: int, chunks: int) -> tuple[int, int]:
    """Chunks run at once and validator calls per chunk, their product at most ``limit``.

    Each chunk gets at least its validators' worth of calls (one item's validators in
    parallel) when the limit allows; the rest of the limit goes to more chunks at once.
    """
    per_chunk = max(1, min(limit, validators))
    parallel = max(1, min(chunks, limit // per_chunk))
    return parallel, max(1, limit // parallel)


def _run_chunks(
    groups: deque[list[ValidationItem]],
    *,
    retries: deque[list[ValidationItem]],
    records: Mapping[str, ItemRecord],
    manifest: BatchManifest,
    store: BatchStore,
    context: WorkflowContext,
    limit: int,
    prefix: str,
    callbacks: Sequence[BaseCallbackHandler] | None,
    on_progress: Progress | None,
    finished: int,
) -> tuple[Status, ChunkOutcome | None, RunLedger]:
    """Run ``groups`` (distinct texts, each with its duplicates) in chunks, a few at a time;
    stop starting new ones once a chunk did not finish. ``retries`` (stored items whose
    validators failed, with their ``records``) go first, each chunk of them completing its
    items (:func:`~multiagent.graphs.batch_chunks.complete_chunk`), its records replacing the
    stored ones.

    A chunk takes up to ``manifest.chunk_size`` groups, under a budget only those whose worst
    case the budget's room covers (:class:`~multiagent.graphs.batch_budget.ItemAdmission`);
    when the next item does not fit, the batch waits for the chunks running to settle, and
    stops as ``budget_exceeded`` once none is left and it still does not fit.

    On Ctrl-C no new chunk or call starts; the chunks running end at their next call and are
    stored with the rest (every call paid for is kept), and the status is ``interrupted``.
    Under :func:`~multiagent._interrupt.stop_on_ctrl_c` (the CLI) the chunks meet the stop at
    their next call and end as ``interrupted``; a ``KeyboardInterrupt`` raised here (a second
    Ctrl-C, or no handler) stops the budget so that they end the same way.

    A chunk that ended by an error nobody expected (:attr:`~multiagent.graphs.
    batch_chunk_outcome.ChunkOutcome.raised`) is stored, and the first such error is raised
    once every running chunk is.
    """
    chunk_size = manifest.chunk_size
    parallel, per_chunk = concurrency_split(
        limit, validators=len(manifest.validators),
        chunks=-(-len(groups) // chunk_size) + -(-len(retries) // chunk_size),
    )  # fmt: skip
    budget = context.ledger.budget_usd
    # each chunk records into a ledger of its own (same run id: one run's usage) reserving
    # against one budget with running totals, since a ledger's per-call work grows with its
    # records (quadratic over one shared by the batch); the run's ledger collects them at the end
    ledger = RunLedger(budget_usd=budget)
    shared = BatchBudget(budget)
    # an item being completed costs at worst its failed validators' calls, not all of them
    asked = asked_again([item for group in retries for item in group], records)
    admission = ItemAdmission(shared, completing_worst_case(context, manifest.validators, asked))
    chunk_ledgers: list[RunLedger] = []
    stopped: ChunkOutcome | None = None
    raised: Exception | None = None
    interrupted = False
    total = len(manifest.items)
    numbers = itertools.count()
    with ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="batch") as pool:
        # started and not yet stored: earmarks, and whether the chunk completes stored items
        running: dict[Future[ChunkOutcome], tuple[int, bool]] = {}

        def submit() -> bool:
            chunk_ledger = RunLedger(shared=shared, run_id=ledger.run_id)
            completing = bool(retries)
            source = retries if completing else groups
            mark, chunk = admission.take(source, most=chunk_size, ledger=chunk_ledger)
            if not chunk:
                return False
            chunk_ledgers.append(chunk_ledger)
            run: Callable[..., ChunkOutcome] = (
                functools.partial(complete_chunk, records=records) if completing else run_chunk
            )
            future = pool.submit(
                run, f"{prefix}:{next(numbers)}", chunk, validators=manifest.validators,
                threshold=manifest.threshold, context=context, max_concurrency=per_chunk,
                ledger=chunk_ledger, callbacks=callbacks,
            )  # fmt: skip
            running[future] = (mark, completing)
            return True

        def keep(future: Future[ChunkOutcome]) -> ChunkOutcome:
            """Store a chunk that ended (storing twice keeps the first: safe to repeat)."""
            nonlocal finished, raised
            chunk = future.result()
            mark, completing = running.pop(future, (-1, False))
            batch_id = manifest.batch_id
            if completing:  # its items have records already: they are replaced
                store.complete(batch_id, chunk.chunk_id, chunk.records, chunk.usage)
                finished += sum(  # partial records (unfinished items) it finished
                    1 for r in chunk.records if not r.partial and records[r.result["id"]].partial
                )
            else:
                finished += store.store(batch_id, chunk.chunk_id, chunk.records, chunk.usage)
            admission.release(mark)
            raised = raised or chunk.raised
            return chunk

        try:
            while len(running) < parallel and submit():
                pass
            while running:
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    chunk = keep(future)
                    if on_progress is not None:
                        on_progress(finished, total)
                    if chunk.status != "completed" and stopped is None:
                        stopped = chunk
                while stopped is None and not stop_requested() and len(running) < parallel:
                    if not submit():  # every item started, or the next one waits for room
                        break
        except (KeyboardInterrupt, RuntimeError) as exc:
            if not from_ctrl_c(exc):
                raise
            interrupted = True
            shared.stop("the batch was interrupted (Ctrl-C)")
            for future in list(running):  # each ends at its next call: wait, keep what it paid
                keep(future)
    if raised is not None:  # what each chunk paid for is stored: the error is the batch's end
        raise raised
    for chunk_ledger in chunk_ledgers:
        ledger.absorb(chunk_ledger)
    interrupted = interrupted or stop_requested()  # chunks left unstarted (the caller checks)
    left = [item["id"] for group in (*retries, *groups) for item in group]
    if stopped is None and left and not interrupted:  # nothing runs, and the next won't fit
        stopped = ChunkOutcome(
            chunk_id=f"{prefix}:admission", status="budget_exceeded", records=[],
            unfinished=left, usage=[],
            ledger=RunLedger(), message=admission.refusal, error="BudgetExceededError",
        )  # fmt: skip
    status: Status = "completed" if stopped is None else stopped.status
    return ("interrupted" if interrupted else status), stopped, ledger


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
    status, stopped, ledger = _run_chunks(
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


def _item_of(number: int, line: str) -> tuple[ValidationItem | None, str | None]:
    try:
        data = json.loads(line)
    except json.JSONDecodeError:
        return None, f"line {number}: not JSON"
    if isinstance(data, str):
        data = {"text": data}
    if not isinstance(data, dict):
        return None, f"line {number}: expected an object with 'text' or a JSON string"
    text = data.get("text")
    if not isinstance(text, str) or not text.strip():
        return None, f"line {number}: no non-empty 'text'"
    try:  # the rule of text given on the command line, with the line
        check_text(text, source=f"line {number}: 'text'")
    except UsageError as exc:
        return None, str(exc)
    item_id = data.get("id", number)
    if not isinstance(item_id, str | int) or isinstance(item_id, bool):
        return None, f"line {number}: 'id' must be a string or an integer"
    if problem := item_id_problem(str(item_id)):  # the rule of validation_input, with the line
        return None, f"line {number}: {problem}"
    return ValidationItem(id=str(item_id), text=text), None


def read_batch_file(path: str | Path) -> list[ValidationItem]:
    """Read a JSONL batch: one ``{"id": ..., "text": ...}`` object (or JSON string) per line.

    Blank lines are skipped; a line without an ``id`` is numbered by its line. The file is read
    as every text file is (:func:`~multiagent._inputs.read_text_file`), so a leading byte order
    mark is dropped.

    Raises:
        UsageError: The file cannot be read, has no items, or has malformed lines (every bad
            line is named, with its number) or repeated ids.
    """
    file = Path(path)
    lines = read_text_file(file, what="batch file").splitlines()
    items: list[ValidationItem] = []
    problems: list[str] = []
    ids: dict[str, int] = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        item, problem = _item_of(number, line)
        if item is None:
            problems.append(str(problem))
            continue
        if item["id"] in ids:
            problems.append(f"line {number}: id {item['id']!r} repeats line {ids[item['id']]}")
            continue
        ids[item["id"]] = number
        items.append(item)
    if problems:
        raise UsageError(f"malformed batch file {file}: {'; '.join(problems)}")
    if not items:
        raise UsageError(f"batch file {file} has no items")
    return items
