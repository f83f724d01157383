"""A batch as many small validation graphs: plan the chunks, run one chunk.

One graph over a whole batch makes every superstep grow with the batch (LangGraph's scratchpad
scans every pending write for every ``Send`` task), so the cost per item grows with the batch.
Here a batch is cut into chunks of a bounded number of distinct texts, and each chunk is one
short validation run: the work per item is the same for 10 items or 100,000.

Identical texts always land in the same chunk, so each distinct text is still validated once.
An item is *finished* when at least one validator answered and every other one answered or
failed after retries (the failures are recorded and the responders decide, as in one run); an
item no validator answered is *unfinished* and is not stored, so a resume (or another worker)
runs it again. A finished item whose validators failed after retries is *incomplete*: a resume
completes it as a single run's ``--resume`` does (:func:`complete_chunk`, on
:func:`~multiagent.nodes.validator.retry_failed_validators`), asking only those validators
again, keeping the verdicts given, and deciding the item anew.

What is kept of an item (finished, incomplete or *partial*: some validators not asked yet) is
an :class:`~multiagent.graphs.batch_records.ItemRecord`; how a chunk's run ended, stopped
mid-way or by an error nobody expected, and what it keeps of what it paid for, is
:mod:`multiagent.graphs.batch_chunk_outcome`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from langchain_core.callbacks import BaseCallbackHandler
from langgraph.checkpoint.memory import InMemorySaver

from multiagent.graphs.batch_chunk_outcome import ChunkOutcome, chunk_outcome, chunk_thread
from multiagent.graphs.batch_records import ItemRecord
from multiagent.graphs.runner import run_workflow
from multiagent.graphs.workflows import compile_workflow
from multiagent.models.ledger import RunLedger
from multiagent.nodes.context import WorkflowContext
from multiagent.nodes.state import ValidationInput, ValidationItem, ValidatorFailure, Verdict
from multiagent.nodes.validator import text_key

#: Distinct texts per chunk by default: large enough that a run's fixed cost is spread thin,
#: small enough that a chunk's superstep stays short and a stopped chunk loses little.
DEFAULT_CHUNK_SIZE = 16


def plan_chunks(
    items: Sequence[ValidationItem], *, chunk_size: int = DEFAULT_CHUNK_SIZE
) -> list[list[ValidationItem]]:
    """Cut ``items`` into chunks of at most ``chunk_size`` distinct texts, in first-seen order.

    Every item whose text is identical to another's lands in the other's chunk (one text key
    per item, computed once: linear in the batch).
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, got {chunk_size}")
    groups: dict[str, list[ValidationItem]] = {}
    for item in items:
        groups.setdefault(text_key(item["text"]), []).append(item)
    chunks: list[list[ValidationItem]] = []
    current: list[ValidationItem] = []
    distinct = 0
    for members in groups.values():
        if distinct == chunk_size:
            chunks.append(current)
            current, distinct = [], 0
        current.extend(members)
        distinct += 1
    if current:
        chunks.append(current)
    return chunks


def run_chunk(
    chunk_id: str,
    items: Sequence[ValidationItem],
    *,
    validators: Sequence[str],
    threshold: float,
    context: WorkflowContext,
    max_concurrency: int,
    ledger: RunLedger | None = None,
    callbacks: Sequence[BaseCallbackHandler] | None = None,
) -> ChunkOutcome:
    """Validate one chunk in its own short graph run (kept in memory only: the caller stores
    records).

    Args:
        chunk_id: Names the run (its trace's thread id) and the chunk's usage record.
        items: The chunk's items.
        validators: Validator names.
        threshold: Consensus threshold.
        context: The run context (pipeline, agents, analysis cache).
        max_concurrency: Validator calls of this chunk in flight at once.
        ledger: The batch run's ledger, shared by its chunks (their calls reserve against
            one budget); default a new ledger with the context's budget.
        callbacks: LangChain callback handlers for the run.
    """
    inputs = ValidationInput(items=list(items), validators=list(validators), threshold=threshold)
    saver = InMemorySaver()  # where the verdicts of a step that stopped are kept
    return chunk_outcome(
        chunk_id, items, {}, validators=validators, threshold=threshold, context=context,
        saver=saver, ledger=ledger,
        run=lambda: run_workflow(
            "validation", inputs, context=context, shared_ledger=ledger, checkpointer=saver,
            thread_id=chunk_id, max_concurrency=max_concurrency, callbacks=callbacks, live=False,
            durability="sync",
        ),
    )  # fmt: skip


def complete_chunk(
    chunk_id: str,
    items: Sequence[ValidationItem],
    records: Mapping[str, ItemRecord],
    *,
    validators: Sequence[str],
    threshold: float,
    context: WorkflowContext,
    max_concurrency: int,
    ledger: RunLedger | None = None,
    callbacks: Sequence[BaseCallbackHandler] | None = None,
) -> ChunkOutcome:
    """Complete stored items whose validators failed or were not asked (partial records): ask
    only those, keep the verdicts given, decide each item anew; the records returned are to
    replace the stored ones.

    The chunk's stored state (its items, verdicts and failures, a validator not asked counting
    as failed: :meth:`~multiagent.graphs.batch_records.ItemRecord.to_retry`) is put into a
    thread of an in-memory checkpointer as a finished validation, which is resumed as any
    finished validation thread is
    (:func:`~multiagent.graphs.runner.run_workflow` with ``resume``:
    :func:`~multiagent.nodes.validator.retry_failed_validators` chooses what runs), so a
    single run and a batch follow one rule.

    Args:
        chunk_id: Names the run and the chunk's usage record.
        items: The chunk's items (each text's duplicates included), every one with a record.
        records: The stored records, by item id.
        validators: The batch's validator names.
        threshold: Consensus threshold.
        context: The run context.
        max_concurrency: Validator calls of this chunk in flight at once.
        ledger: The batch run's ledger for this chunk (see :func:`run_chunk`).
        callbacks: LangChain callback handlers for the run.
    """
    verdicts: list[Verdict] = []
    failures: list[ValidatorFailure] = []
    seen: set[str] = set()
    for item in items:
        key = text_key(item["text"])
        if key not in seen:  # identical items share one record's verdicts: given once
            seen.add(key)
            verdicts.extend(records[item["id"]].verdicts)
            failures.extend(records[item["id"]].to_retry(key))
    saver = InMemorySaver()
    compile_workflow("validation", checkpointer=saver).update_state(
        chunk_thread(chunk_id),
        {
            "items": list(items), "validators": list(validators), "threshold": threshold,
            "verdicts": verdicts, "failures": failures,
            "results": [records[item["id"]].result for item in items],
        },
        as_node="aggregate",  # a finished validation: resuming it runs its failed validators
    )  # fmt: skip
    return chunk_outcome(
        chunk_id, items, records, validators=validators, threshold=threshold, context=context,
        saver=saver, ledger=ledger,
        run=lambda: run_workflow(
            "validation", None, context=context, shared_ledger=ledger, checkpointer=saver,
            thread_id=chunk_id, resume=True, max_concurrency=max_concurrency,
            callbacks=callbacks, live=False, durability="sync",
        ),
    )  # fmt: skip
