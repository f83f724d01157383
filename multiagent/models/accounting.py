"""Accounting of model calls: the worst case reserved before a call, one record after it.

:meth:`CallIdentity.finish` is the one place a :class:`~multiagent.models.ledger.CallRecord` is
made. It settles the call's budget reservations (run and project), appends the record to the
run's ledger and counts it in the metrics store; the node usage in graph state, ``--json``,
``--resume`` and trace attributes read the same record (see :data:`current_scope` and
:func:`stamp`), so every figure agrees.
"""

from __future__ import annotations

import contextvars
import itertools
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

from langchain_core.messages import BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult, Generation

from multiagent._metrics import get_metrics
from multiagent.models.budget import ProjectBudget
from multiagent.models.ledger import CallRecord, Outcome, Reservation, RunLedger
from multiagent.models.provider_errors import error_kind
from multiagent.models.tokens import count_tokens, prompt_tokens
from multiagent.policies import ModelPrice

#: Output tokens reserved for a call that sets no ``max_tokens``; the pipeline then asks the
#: provider for at most this many, so the reservation is a true worst case.
DEFAULT_MAX_OUTPUT_TOKENS = 1024
#: The first version's name for it.
ESTIMATED_OUTPUT_TOKENS = DEFAULT_MAX_OUTPUT_TOKENS
#: Margin on the prompt estimate: tiktoken's count is not every provider's tokenizer.
PROMPT_MARGIN = 1.10
#: Key of the record's figures in a generation's ``generation_info`` (read by tracing).
STAMP_KEY = "multiagent_call"


@dataclass(frozen=True)
class NodeScope:
    """One execution of a graph node, which its calls are recorded under."""

    node: str
    id: int


_scope_ids = itertools.count(1)
#: The node execution making calls in this context (LangGraph copies contexts into the
#: threads and tasks it runs nodes in, so each node execution sees its own).
current_scope: contextvars.ContextVar[NodeScope | None] = contextvars.ContextVar(
    "multiagent_node_scope", default=None
)


def new_scope(node: str) -> NodeScope:
    """A new execution of ``node``."""
    return NodeScope(node=node, id=next(_scope_ids))


@contextmanager
def node_scope(node: str) -> Iterator[NodeScope]:
    """Record the calls made inside the block under a new execution of ``node``."""
    scope = new_scope(node)
    token = current_scope.set(scope)
    try:
        yield scope
    finally:
        current_scope.reset(token)


@dataclass
class Hold:
    """A call's budget held in the run ledger and the project budget until it is recorded."""

    usd: float
    run: Reservation | None = None
    project: str | None = None
    done: bool = field(default=False)


@dataclass(frozen=True)
class CallIdentity:
    """Who calls which model, where the call is recorded, and what it costs."""

    agent: str
    provider: str
    model: str
    price: ModelPrice
    ledger: RunLedger | None
    project: ProjectBudget | None = None

    def worst_case_usd(
        self, messages: Sequence[BaseMessage], *, tools: Iterable[Any] = (), max_output: int
    ) -> float:
        """The most a call can cost: its prompt (with margin) and its whole output allowance."""
        return self.worst_case_of(prompt_tokens(messages, tools=tools), max_output=max_output)

    def worst_case_of(self, prompt: int, *, max_output: int) -> float:
        """:meth:`worst_case_usd` for a prompt already estimated at ``prompt`` tokens."""
        return worst_case_cost(self.price, prompt, max_output=max_output)

    def hold(self, usd: float) -> Hold:
        """Reserve ``usd`` in the run's ledger, then in the project budget.

        Raises:
            BudgetExceededError: Either budget cannot cover the call (nothing stays held).
        """
        held = Hold(usd=usd)
        if self.ledger is not None:
            held.run = self.ledger.reserve(usd)
        if self.project is not None:
            try:
                held.project = self.project.reserve(usd)
            except BaseException:
                self.release(held)
                raise
        return held

    def release(self, held: Hold) -> None:
        """Give a hold back unused (idempotent)."""
        if held.done:
            return
        held.done = True
        if held.run is not None and self.ledger is not None:
            self.ledger.release(held.run)
        if held.project is not None and self.project is not None:
            self.project.release(held.project)

    def finish(
        self,
        outcome: Outcome,
        *,
        input_tokens: int,
        output_tokens: int,
        estimated: bool,
        latency_s: float,
        attempts: int,
        error: BaseException | None = None,
        held: Hold | None = None,
        saved_usd: float = 0.0,
    ) -> CallRecord:
        """Make the call's one record: settle its hold, add it to the ledger and the metrics."""
        scope = current_scope.get()
        cost = 0.0 if outcome == "cached" else self.price.cost(input_tokens, output_tokens)
        record = CallRecord(
            agent=self.agent,
            model=self.model,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cost_usd=cost,
            latency_s=latency_s,
            outcome=outcome,
            provider=self.provider,
            attempts=attempts,
            error=error_kind(error) if error is not None else None,
            node=scope.node if scope is not None else "",
            scope=scope.id if scope is not None else 0,
            estimated=estimated,
            saved_usd=saved_usd,
        )
        run = None
        if held is not None and not held.done:
            held.done = True
            run = held.run
            if held.project is not None and self.project is not None:
                self.project.settle(held.project, cost)
        if self.ledger is not None:
            self.ledger.record(record, reservation=run)
        _count(record)
        return record


def worst_case_cost(price: ModelPrice, prompt: int, *, max_output: int) -> float:
    """The most a call with a prompt estimated at ``prompt`` tokens can cost at ``price``: the
    prompt with :data:`PROMPT_MARGIN` and the whole output allowance (what a call reserves)."""
    return price.cost(int(prompt * PROMPT_MARGIN) + 1, max_output)


def _count(record: CallRecord) -> None:
    """Add a record to the process's metrics store."""
    metrics = get_metrics()
    labels = {
        "provider": record.provider,
        "model": record.model,
        "agent": record.agent,
        "outcome": record.outcome,
    }
    metrics.inc("model_calls_total", labels=labels)
    model = {"model": record.model}
    for direction, n in (("input", record.input_tokens), ("output", record.output_tokens)):
        if n:
            metrics.inc("model_tokens_total", value=n, labels={**model, "direction": direction})
    if record.cost_usd:
        metrics.inc("model_cost_usd_total", value=record.cost_usd, labels=model)
    if record.saved_usd:
        metrics.inc("model_saved_usd_total", value=record.saved_usd, labels=model)
    if record.outcome == "ok":
        metrics.observe("model_latency_seconds", value=record.latency_s, labels=model)
    elif record.outcome == "error":
        metrics.inc("model_errors_total", labels={**model, "kind": record.error or "error"})


def usage_of(messages: Iterable[BaseMessage]) -> tuple[int, int] | None:
    """Input and output tokens the provider reported over ``messages`` (or chunks), or
    ``None`` when it reported none."""
    tokens_in = tokens_out = 0
    seen = False
    for message in messages:
        usage: Mapping[str, Any] | None = getattr(message, "usage_metadata", None)
        if usage:
            seen = True
            tokens_in += int(usage.get("input_tokens", 0))
            tokens_out += int(usage.get("output_tokens", 0))
    return (tokens_in, tokens_out) if seen else None


def output_estimate(messages: Iterable[BaseMessage]) -> int:
    """Output tokens of ``messages`` counted with the estimator (text and tool-call arguments)."""
    total = 0
    for message in messages:
        total += count_tokens(str(message.text))
        for chunk in getattr(message, "tool_call_chunks", None) or []:
            total += count_tokens(str(chunk.get("name") or "") + str(chunk.get("args") or ""))
        for call in getattr(message, "tool_calls", None) or []:
            if not getattr(message, "tool_call_chunks", None):
                total += count_tokens(str(call["name"]) + str(call["args"]))
    return total


G = TypeVar("G", bound=Generation)


def stamp(generation: G, record: CallRecord) -> G:
    """Put ``record``'s figures on ``generation`` so tracing reads the record, not a recount."""
    info = dict(generation.generation_info or {})
    info[STAMP_KEY] = record.attributes()
    generation.generation_info = info
    return generation


def unstamped(generation: G) -> G:
    """A copy of ``generation`` without a record's figures (what the cache stores)."""
    info = generation.generation_info
    if not info or STAMP_KEY not in info:
        return generation
    rest = {k: v for k, v in info.items() if k != STAMP_KEY}
    return generation.model_copy(update={"generation_info": rest or None})


def pop_headers(generation: ChatGeneration | ChatGenerationChunk) -> Mapping[str, str] | None:
    """Take provider response headers out of a generation, so they are read, not stored."""
    found: Any = None
    if generation.generation_info and "headers" in generation.generation_info:
        found = generation.generation_info.pop("headers")
    metadata = generation.message.response_metadata
    if "headers" in metadata:
        found = metadata.pop("headers") or found
    return found if isinstance(found, Mapping) else None


def result_headers(result: ChatResult) -> Mapping[str, str] | None:
    """The response headers of a result (removed from it)."""
    headers = None
    for generation in result.generations:
        headers = pop_headers(generation) or headers
    if result.llm_output and "headers" in result.llm_output:
        headers = result.llm_output.pop("headers") or headers
    return headers
