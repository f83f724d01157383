"""A batch as many small validation graphs: plan the chunks, run one chunk, keep what finished.

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

A chunk that stopped mid-way (its budget, Ctrl-C, SIGTERM, a worker stopping) keeps what it
paid for. Its run has a checkpointer of its own, in memory, that each finished task's writes
reach as the task ends (LangGraph's ``durability="sync"``), so the verdicts of the validator
calls that finished in the step that stopped are kept as LangGraph keeps any finished task's
writes. With ``"exit"`` (written once, as the run ends) the writes of the tasks still answering
when an error ended the step, which finish after LangGraph wrote its exit checkpoint, were lost
with ``--concurrency`` above 1, and a resume bought those verdicts again.

The items those verdicts finish are stored as finished; an item some of whose validators
answered and the others were not asked yet is stored as a *partial* record (still unfinished):
its verdicts, and the validators not asked (:attr:`ItemRecord.unasked`). A resume completes a
partial record as it completes an incomplete one: the validators not asked count as failed, so
:func:`~multiagent.nodes.validator.retry_failed_validators` asks them, and only them; no verdict
is bought twice. A chunk that stopped also reports the usage of every call it made (from its
ledger), so a batch's spend counts what was paid.

A chunk whose run ended by an error nobody expected (a bug in a node, a tool or a parser
raising: not a provider failure, which is recorded) keeps what it paid for the same way: the
error ends the step, the finished tasks' writes are in the chunk's checkpointer, and the
chunk's records are made from them as a stopped chunk's are. Its outcome
is ``failed`` and carries the error (:attr:`ChunkOutcome.raised`), which the caller raises once
it has stored the records: a local batch ends with the error as before, a queue worker counts
the entry's failed attempt as before, and the retry asks only the validators not asked yet.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.memory import InMemorySaver

from multiagent.graphs.runner import WorkflowOutcome, run_workflow
from multiagent.graphs.threads import unanswered_items
from multiagent.graphs.workflows import compile_workflow
from multiagent.models.ledger import AnalysisHit, CallRecord, RunLedger
from multiagent.nodes.context import WorkflowContext
from multiagent.nodes.state import (
    ItemResult,
    ValidationInput,
    ValidationItem,
    ValidatorFailure,
    ValidatorTask,
    Verdict,
)
from multiagent.nodes.usage import Usage, usage_from_records
from multiagent.nodes.validator import failed_validators, item_result, text_key
from multiagent.observability.live import live_writer

ChunkStatus = Literal["completed", "failed", "budget_exceeded", "interrupted"]
#: The error a validator not asked yet counts as failing with, while a partial record is
#: completed: what makes :func:`~multiagent.nodes.validator.retry_failed_validators` ask it.
NOT_ASKED = "not asked yet: the batch stopped before this validator's call"
#: Distinct texts per chunk by default: large enough that a run's fixed cost is spread thin,
#: small enough that a chunk's superstep stays short and a stopped chunk loses little.
DEFAULT_CHUNK_SIZE = 16


@dataclass(frozen=True)
class ItemRecord:
    """What is kept of one item: its consensus and the verdicts it rests on.

    A *partial* record (``unasked`` not empty) is an unfinished item's verdicts, kept because
    they were paid for: its ``result`` is the consensus of those verdicts only, and no result
    of the batch until a resume asks the validators in ``unasked``.
    """

    result: ItemResult
    verdicts: list[Verdict]
    failures: list[ValidatorFailure]
    unasked: list[str] = field(default_factory=list)

    @property
    def partial(self) -> bool:
        """Whether validators of the item were not asked yet (the item is unfinished)."""
        return bool(self.unasked)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (what the stores keep; ``unasked`` only in a partial record)."""
        data: dict[str, Any] = {
            "result": self.result,
            "verdicts": self.verdicts,
            "failures": self.failures,
        }
        if self.unasked:
            data["unasked"] = self.unasked
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ItemRecord:
        """Read back :meth:`as_dict`."""
        return cls(
            result=data["result"], verdicts=list(data["verdicts"]),
            failures=list(data["failures"]), unasked=list(data.get("unasked", [])),
        )  # fmt: skip

    def to_retry(self, key: str) -> list[ValidatorFailure]:
        """The record's failures, and a failure (:data:`NOT_ASKED`) for each validator not
        asked yet: what a completion's state holds, so that the validators to ask are chosen
        by one rule."""
        missing = [
            ValidatorFailure(key=key, validator=name, error=NOT_ASKED) for name in self.unasked
        ]
        return [*self.failures, *missing]

    def failed_validators(self, item: ValidationItem) -> list[ValidatorTask]:
        """The validators of ``item`` that failed after retries and gave no verdict since, or
        were not asked yet: what a resume asks (the single run's rule, :func:`~multiagent.
        nodes.validator.failed_validators`); none for an item fully decided."""
        failures = self.to_retry(text_key(item["text"]))
        return failed_validators({"items": [item], "verdicts": self.verdicts, "failures": failures})


@dataclass
class ChunkOutcome:
    """How one chunk ended: the finished items' records, and the ids left unfinished."""

    chunk_id: str
    status: ChunkStatus
    records: list[ItemRecord]
    unfinished: list[str]
    usage: list[Usage]
    ledger: RunLedger
    message: str = ""
    error: str | None = None
    seconds: float = 0.0
    spent_usd: float = field(default=0.0)
    #: The error nobody expected that ended the chunk's run (its records are what it paid
    #: for before): the caller raises it once they are stored.
    raised: Exception | None = field(default=None, repr=False)


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


def asked_again(
    items: Sequence[ValidationItem], records: Mapping[str, ItemRecord]
) -> dict[str, list[str]]:
    """The validators a completion of ``items`` asks again (those that failed), by text key;
    items without a record in ``records`` are left out."""
    asked: dict[str, list[str]] = {}
    for item in items:
        record = records.get(item["id"])
        if record is not None:
            tasks = record.failed_validators(item)
            asked[text_key(item["text"])] = [task["validator"] for task in tasks]
    return asked


def ledger_usage(ledger: RunLedger) -> list[Usage]:
    """Usage entries of every call (and analysis-cache hit) ``ledger`` holds, one per node,
    agent and model."""
    groups: dict[tuple[str, str, str], list[CallRecord]] = {}
    for call in ledger.records():
        groups.setdefault((call.node, call.agent, call.model), []).append(call)
    hits: dict[tuple[str, str, str], list[AnalysisHit]] = {}
    for hit in ledger.analysis_hit_records():
        hits.setdefault((hit.node, hit.agent, hit.model), []).append(hit)
        groups.setdefault((hit.node, hit.agent, hit.model), [])
    entries: list[Usage] = []
    for (node, agent, model), calls in groups.items():
        seconds = sum(call.latency_s for call in calls)
        entries.append(
            usage_from_records(
                calls, node=node, agent=agent, model=model, seconds=seconds, run=ledger.run_id,
                analysis_hits=hits.get((node, agent, model), []),
            )
        )  # fmt: skip
    return entries


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
    return _chunk_outcome(
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
    as failed: :meth:`ItemRecord.to_retry`) is put into a thread of an in-memory checkpointer
    as a finished validation, which is resumed as any finished validation thread is
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
        _thread(chunk_id),
        {
            "items": list(items), "validators": list(validators), "threshold": threshold,
            "verdicts": verdicts, "failures": failures,
            "results": [records[item["id"]].result for item in items],
        },
        as_node="aggregate",  # a finished validation: resuming it runs its failed validators
    )  # fmt: skip
    return _chunk_outcome(
        chunk_id, items, records, validators=validators, threshold=threshold, context=context,
        saver=saver, ledger=ledger,
        run=lambda: run_workflow(
            "validation", None, context=context, shared_ledger=ledger, checkpointer=saver,
            thread_id=chunk_id, resume=True, max_concurrency=max_concurrency,
            callbacks=callbacks, live=False, durability="sync",
        ),
    )  # fmt: skip


def _thread(chunk_id: str) -> RunnableConfig:
    """The config of a chunk's thread in its in-memory checkpointer."""
    return {"configurable": {"thread_id": chunk_id}, "metadata": {"workflow": "validation"}}


def _given(
    values: Mapping[str, Any],
    kept: Sequence[tuple[str, str, Any]],
    records: Mapping[str, ItemRecord],
) -> tuple[dict[str, list[Verdict]], dict[str, list[ValidatorFailure]]]:
    """Every verdict the chunk has, and every failure after retries of a validator with no
    verdict, by text key, each (text, validator) once.

    They are those of the thread's state, those the finished tasks of a step that stopped
    wrote (``kept``: the checkpointer's pending writes), and the failures of the stored
    ``records`` being completed that were not retried yet; a validator not asked
    (:data:`NOT_ASKED`) is no failure.
    """
    verdicts: dict[tuple[str, str], Verdict] = {}
    for verdict in [*values.get("verdicts", []), *_written(kept, "verdicts")]:
        verdicts.setdefault((verdict["key"], verdict["validator"]), verdict)
    failures: dict[tuple[str, str], ValidatorFailure] = {}
    prior = [failure for record in records.values() for failure in record.failures]
    for failure in [*_written(kept, "failures"), *values.get("failures", []), *prior]:
        pair = (failure["key"], failure["validator"])
        if failure["error"] != NOT_ASKED and pair not in verdicts:
            failures.setdefault(pair, failure)
    by_key: dict[str, list[Verdict]] = {}
    for verdict in verdicts.values():
        by_key.setdefault(verdict["key"], []).append(verdict)
    failed_by_key: dict[str, list[ValidatorFailure]] = {}
    for failure in failures.values():
        failed_by_key.setdefault(failure["key"], []).append(failure)
    return by_key, failed_by_key


def _written(kept: Sequence[tuple[str, str, Any]], channel: str) -> list[Any]:
    """What the finished tasks wrote to ``channel`` (each a list; a resume's ``Overwrite`` of
    the failures, which the aggregator reads, is no task's)."""
    return [
        entry
        for _task, name, value in kept
        if name == channel and isinstance(value, list)
        for entry in value
    ]


def _chunk_outcome(
    chunk_id: str,
    items: Sequence[ValidationItem],
    records: Mapping[str, ItemRecord],
    *,
    validators: Sequence[str],
    threshold: float,
    context: WorkflowContext,
    saver: InMemorySaver,
    ledger: RunLedger | None,
    run: Callable[[], WorkflowOutcome],
) -> ChunkOutcome:
    """Run a chunk's graph (``run``, on ``saver``, recording into ``ledger``); make a record of
    each item some validator answered (a partial one when others were not asked); the others
    are unfinished. A run that raised an error nobody expected is ``failed`` and carries it."""
    began = time.perf_counter()
    raised: Exception | None = None
    # thousands of sub-second runs would bury the dashboard's live runs page (and recording
    # them cost a quarter of a millisecond per call): a batch is followed by its progress, and
    # its limiters are still sampled for the backpressure page
    with live_writer(context.settings.home).sampling():
        try:
            outcome = run()
        except Exception as exc:  # a bug, not the provider: keep what was paid, then raise it
            raised = exc
            outcome = _raised_outcome(exc, chunk_id, saver=saver, ledger=ledger, began=began)
    values = outcome.values
    usage: list[Usage] = list(values.get("usage", []))
    if outcome.status != "completed":
        # the step that stopped left no usage in state, but its finished calls were paid for
        usage = ledger_usage(outcome.ledger)
    stored = saver.get_tuple(_thread(chunk_id))
    kept = [] if stored is None else list(stored.pending_writes or [])
    by_key, failed_by_key = _given(values, kept, records)
    order = {name: index for index, name in enumerate(validators)}
    quorum = context.settings.profile.validation.quorum_for(len(validators))
    made: list[ItemRecord] = []
    unfinished: list[str] = []
    for item in items:
        key = text_key(item["text"])
        verdicts = sorted(by_key.get(key, []), key=lambda v: order.get(v["validator"], 0))
        if not verdicts:  # nobody answered: not a result, run it again later
            unfinished.append(item["id"])
            continue
        failures = failed_by_key.get(key, [])
        done = {v["validator"] for v in verdicts} | {f["validator"] for f in failures}
        unasked = [name for name in validators if name not in done]
        result = item_result(
            item, verdicts=verdicts, failures=failures, validators=len(validators),
            threshold=threshold, quorum=quorum,
        )  # fmt: skip
        made.append(ItemRecord(result, verdicts, failures, unasked))
        if unasked:  # paid for, kept, and still to finish
            unfinished.append(item["id"])
    status: ChunkStatus = "completed"
    message, error = outcome.message, outcome.error
    if outcome.status in ("budget_exceeded", "interrupted"):
        status = outcome.status
    elif unfinished:
        status = "failed"
        # the run's end (not a call that raised): say it as the batch does, for the chunk
        if outcome.status == "completed" or unanswered_items(values):
            errors = sorted({f["error"] for f in values.get("failures", [])})
            message = "no validator answered some items after retries"
            error = "; ".join(errors[:3]) or None
    if raised is not None:  # whatever it finished, its run did not end well
        status, message, error = "failed", outcome.message, outcome.error
    return ChunkOutcome(
        chunk_id=chunk_id,
        status=status,
        records=made,
        unfinished=unfinished,
        usage=usage,
        ledger=outcome.ledger,
        message=message,
        error=error,
        seconds=outcome.seconds,
        spent_usd=float(sum(entry.get("cost_usd", 0.0) for entry in usage)),
        raised=raised,
    )


def _raised_outcome(
    exc: Exception,
    chunk_id: str,
    *,
    saver: InMemorySaver,
    ledger: RunLedger | None,
    began: float,
) -> WorkflowOutcome:
    """How a chunk's run that raised ``exc`` ended: ``failed``, with the thread's values as
    LangGraph wrote them on its way out (the step's finished tasks' writes are the saver's
    pending writes, read as a stopped chunk's are) and the calls of ``ledger`` (none without
    one: the run's own ledger went with the error). The error is named by its type only: its
    text may quote the input, and it is raised to the caller anyway."""
    state = compile_workflow("validation", checkpointer=saver).get_state(_thread(chunk_id))
    return WorkflowOutcome(
        workflow="validation", thread_id=chunk_id, status="failed", values=dict(state.values),
        ledger=ledger if ledger is not None else RunLedger(),
        seconds=round(time.perf_counter() - began, 4),
        message=f"the chunk's run raised {type(exc).__name__}", error=type(exc).__name__,
    )  # fmt: skip
