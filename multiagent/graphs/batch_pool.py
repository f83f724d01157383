"""Run a batch's chunks a few at a time, each stored as it ends, within the batch's budget.

Under a budget, a chunk is given an item only while the budget's room covers the item's worst
case (each of its validators' calls at what it reserves:
:class:`~multiagent.graphs.batch_budget.ItemAdmission`). A tight budget is so spent on finishing
items, not on many items part-validated by parallel chunks until every one of them is refused a
call: when the next item does not fit, the batch waits for the running chunks to settle (their
real cost is far below their worst case), and once none runs and it still does not fit, stops
as ``budget_exceeded`` with the unfinished items named, to be finished by a resume with a larger
budget. Every call still reserves its worst case, so settled spend never exceeds the budget.
"""

from __future__ import annotations

import functools
import itertools
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait

from langchain_core.callbacks import BaseCallbackHandler

from multiagent._interrupt import stop_requested
from multiagent.graphs.batch_budget import BatchBudget, ItemAdmission, completing_worst_case
from multiagent.graphs.batch_chunk_outcome import ChunkOutcome
from multiagent.graphs.batch_chunks import complete_chunk, run_chunk
from multiagent.graphs.batch_records import ItemRecord, asked_again
from multiagent.graphs.batch_store import BatchManifest, BatchStore
from multiagent.graphs.run_outcome import Status, from_ctrl_c
from multiagent.models.ledger import RunLedger
from multiagent.nodes.context import WorkflowContext
from multiagent.nodes.state import ValidationItem

#: Reports ``(finished items, all items)`` after every stored chunk.
Progress = Callable[[int, int], None]


def concurrency_split(limit: int, *, validators: int, chunks: int) -> tuple[int, int]:
    """Chunks run at once and validator calls per chunk, their product at most ``limit``.

    Each chunk gets at least its validators' worth of calls (one item's validators in
    parallel) when the limit allows; the rest of the limit goes to more chunks at once.
    """
    per_chunk = max(1, min(limit, validators))
    parallel = max(1, min(chunks, limit // per_chunk))
    return parallel, max(1, limit // parallel)


def run_chunks(
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
