"""How one chunk's run ended: the records of what it finished, and what it paid for.

A chunk that stopped mid-way (its budget, Ctrl-C, SIGTERM, a worker stopping) keeps what it
paid for. Its run has a checkpointer of its own, in memory, that each finished task's writes
reach as the task ends (LangGraph's ``durability="sync"``), so the verdicts of the validator
calls that finished in the step that stopped are kept as LangGraph keeps any finished task's
writes. With ``"exit"`` (written once, as the run ends) the writes of the tasks still answering
when an error ended the step, which finish after LangGraph wrote its exit checkpoint, were lost
with ``--concurrency`` above 1, and a resume bought those verdicts again.

The items those verdicts finish make records, partial ones where validators were not asked yet
(:class:`~multiagent.graphs.batch_records.ItemRecord`). A chunk that stopped also reports the
usage of every call it made (from its ledger), so a batch's spend counts what was paid.

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

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.memory import InMemorySaver

from multiagent.graphs.batch_records import NOT_ASKED, ItemRecord
from multiagent.graphs.run_outcome import WorkflowOutcome
from multiagent.graphs.threads import unanswered_items
from multiagent.graphs.workflows import compile_workflow
from multiagent.models.ledger import AnalysisHit, CallRecord, RunLedger
from multiagent.nodes.context import WorkflowContext
from multiagent.nodes.state import ValidationItem, ValidatorFailure, Verdict
from multiagent.nodes.usage import Usage, usage_from_records
from multiagent.nodes.validator import item_result, text_key
from multiagent.observability.live import live_writer

ChunkStatus = Literal["completed", "failed", "budget_exceeded", "interrupted"]


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


def chunk_thread(chunk_id: str) -> RunnableConfig:
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
    (:data:`~multiagent.graphs.batch_records.NOT_ASKED`) is no failure.
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


def chunk_outcome(
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
    stored = saver.get_tuple(chunk_thread(chunk_id))
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
    state = compile_workflow("validation", checkpointer=saver).get_state(chunk_thread(chunk_id))
    return WorkflowOutcome(
        workflow="validation", thread_id=chunk_id, status="failed", values=dict(state.values),
        ledger=ledger if ledger is not None else RunLedger(),
        seconds=round(time.perf_counter() - began, 4),
        message=f"the chunk's run raised {type(exc).__name__}", error=type(exc).__name__,
    )  # fmt: skip
