"""Validate many items at once with bounded concurrency: ``batch_cross_validate`` (the seed's name).

All items run in one validation graph: one ``Send`` per distinct text and validator, with
``max_concurrency`` at the top level of the run config bounding how many validators call the
model at once. Identical items are validated once; verdicts on content seen before come from the
analysis cache when the context has one.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from langchain_core.callbacks import BaseCallbackHandler
from langgraph.checkpoint.base import BaseCheckpointSaver

from multiagent.errors import UsageError
from multiagent.graphs.inputs import validation_input
from multiagent.graphs.runner import WorkflowEvent, WorkflowOutcome, run_workflow
from multiagent.graphs.workflows import new_thread_id
from multiagent.nodes.context import WorkflowContext, build_context
from multiagent.nodes.state import ItemResult, ValidationItem, ValidatorFailure, Verdict
from multiagent.nodes.usage import total_usage
from multiagent.policies import Settings, load_settings


@dataclass
class BatchValidation:
    """The outcome of :func:`batch_cross_validate`; ``results`` are in input order."""

    results: list[ItemResult]
    verdicts: list[Verdict]
    failures: list[ValidatorFailure]
    usage: dict[str, Any]
    seconds: float
    status: str
    thread_id: str
    outcome: WorkflowOutcome


def batch_cross_validate(
    items: Sequence[str | ValidationItem],
    *,
    settings: Settings | None = None,
    validators: int | Sequence[str] | None = None,
    threshold: float | None = None,
    max_concurrency: int | None = None,
    context: WorkflowContext | None = None,
    checkpointer: BaseCheckpointSaver[Any] | None = None,
    thread_id: str | None = None,
    on_event: Callable[[WorkflowEvent], None] | None = None,
    callbacks: Sequence[BaseCallbackHandler] | None = None,
) -> BatchValidation:
    """Cross-validate every item; return each item's consensus in input order.

    Args:
        items: Texts, or ``{"id": ..., "text": ...}`` items.
        settings: Resolved settings; default :func:`multiagent.load_settings`.
        validators: How many validators per item (within the profile's bounds), or their names.
        threshold: Consensus threshold in (0, 1]; default the profile's.
        max_concurrency: Validator calls in flight at once; default the profile's
            ``rate_limit.max_concurrency``.
        context: A run context to use (to share a pipeline, ledger or analysis cache).
        checkpointer: Keep the batch as a resumable thread; default: not persisted.
        thread_id: The thread's id; default a new one.
        on_event: Receives node starts and ends.
        callbacks: LangChain callback handlers for the run (tracing, counting calls).

    Raises:
        UsageError: No items, an empty text, repeated ids, or validators/threshold out of range.
    """
    settings = settings or load_settings()
    context = context or build_context(settings)
    inputs = validation_input(
        items, settings=settings, agents=context.agents, validators=validators, threshold=threshold
    )
    limit = max_concurrency or settings.profile.rate_limit.max_concurrency
    if limit < 1:
        raise UsageError(f"max_concurrency must be at least 1, got {limit}")
    outcome = run_workflow(
        "validation",
        inputs,
        context=context,
        checkpointer=checkpointer,
        thread_id=thread_id or new_thread_id("validation"),
        on_event=on_event,
        max_concurrency=limit,
        callbacks=callbacks,
    )
    values = outcome.values
    return BatchValidation(
        results=list(values.get("results", [])),
        verdicts=list(values.get("verdicts", [])),
        failures=list(values.get("failures", [])),
        usage=total_usage(values.get("usage", [])),
        seconds=outcome.seconds,
        status=outcome.status,
        thread_id=outcome.thread_id,
        outcome=outcome,
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
    item_id = data.get("id", number)
    if not isinstance(item_id, str | int) or isinstance(item_id, bool):
        return None, f"line {number}: 'id' must be a string or an integer"
    return ValidationItem(id=str(item_id), text=text), None


def read_batch_file(path: str | Path) -> list[ValidationItem]:
    """Read a JSONL batch: one ``{"id": ..., "text": ...}`` object (or JSON string) per line.

    Blank lines are skipped; a line without an ``id`` is numbered by its line.

    Raises:
        UsageError: The file cannot be read, has no items, or has malformed lines (every bad
            line is named, with its number) or repeated ids.
    """
    file = Path(path)
    try:
        lines = file.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or "not UTF-8 text"
        raise UsageError(f"cannot read batch file {file}: {reason}") from None
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
