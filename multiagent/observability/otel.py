"""A LangChain callback handler that turns every run of a graph into OpenTelemetry spans.

One span per chain (the graph, each node), chat model call and tool call; parents follow
LangChain's ``parent_run_id``, skipping the runs LangGraph hides from tracers
(``langsmith:hidden``). Spans carry what a reader searches for: the run's workflow, profile,
policy, thread id and correlation id (inherited metadata, see
:func:`multiagent.observability.tracing.run_config`), the agent and LangGraph node, and for model
calls the model, tokens, cost and whether the completion cache answered. Errors set the span's
status and record the exception (a model call's figures on the call's span only; a run stopped
by Ctrl-C or cancelled is ``multiagent.error_kind = cancelled``); a LangGraph interrupt (waiting
for approval) is not an error.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import BaseMessage
from langchain_core.outputs import ChatGeneration, LLMResult
from langgraph.errors import GraphBubbleUp
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from multiagent.graphs.workflows import task_label
from multiagent.models.provider_errors import error_kind
from multiagent.policies import ModelPrice

PriceOf = Callable[[str], ModelPrice | None]

#: Run metadata copied onto every span, under these attribute names.
METADATA_ATTRIBUTES: dict[str, str] = {
    "workflow": "multiagent.workflow",
    "profile": "multiagent.profile",
    "policy": "multiagent.policy",
    "provider": "multiagent.provider",
    "thread_id": "multiagent.thread_id",
    "correlation_id": "multiagent.correlation_id",
    "agent": "multiagent.agent",
    "agent_tier": "multiagent.agent_tier",
    "langgraph_node": "langgraph.node",
    "langgraph_step": "langgraph.step",
}
_HIDDEN = "langsmith:hidden"


def _attributes(metadata: Mapping[str, Any] | None, tags: Sequence[str] | None) -> dict[str, Any]:
    attrs: dict[str, Any] = {}
    for key, name in METADATA_ATTRIBUTES.items():
        value = (metadata or {}).get(key)
        if isinstance(value, str | int | float | bool):
            attrs[name] = value
    hidden = ("seq:", "graph:step:", "langsmith:")
    # a tag given by both the run and its caller arrives twice: shown once
    shown = list(dict.fromkeys(t for t in tags or [] if not t.startswith(hidden)))
    if shown:
        attrs["multiagent.tags"] = shown
    return attrs


#: Where the model pipeline puts a call's record figures (``generation_info``, or the error).
STAMP_KEY = "multiagent_call"


def _stamped(response: LLMResult) -> dict[str, Any] | None:
    """The figures of the pipeline's record of this call, when the pipeline made it."""
    for generations in response.generations:
        for generation in generations:
            found = (generation.generation_info or {}).get(STAMP_KEY)
            if isinstance(found, dict):
                return found
    return None


def _usage(response: LLMResult) -> tuple[int, int, bool, str | None]:
    """Input and output tokens, whether the cache answered, and the responding model."""
    tokens_in = tokens_out = 0
    cached = False
    model: str | None = None
    for generations in response.generations:
        for generation in generations:
            if not isinstance(generation, ChatGeneration):
                continue
            usage: Mapping[str, Any] = generation.message.usage_metadata or {}  # type: ignore[attr-defined]
            tokens_in += int(usage.get("input_tokens", 0))
            tokens_out += int(usage.get("output_tokens", 0))
            # LangChain marks a completion served from its cache with a zero total_cost
            cached = cached or usage.get("total_cost", None) == 0
            named = generation.message.response_metadata.get("model_name")
            model = model or (str(named) if named else None)
    if not (tokens_in or tokens_out) and response.llm_output:
        raw = response.llm_output.get("token_usage") or {}
        tokens_in, tokens_out = (
            int(raw.get("prompt_tokens", 0)),
            int(raw.get("completion_tokens", 0)),
        )
    return tokens_in, tokens_out, cached, model


class OpenTelemetryCallbackHandler(BaseCallbackHandler):
    """Open an OpenTelemetry span per LangChain run, parented by run ids.

    Args:
        tracer: Where spans go (``provider.get_tracer(...)``).
        price_of: Price of a model by name, for the ``multiagent.cost_usd`` attribute.
    """

    run_inline = True  # spans must open in order, on the thread that runs the step

    def __init__(self, tracer: trace.Tracer, *, price_of: PriceOf | None = None) -> None:
        self.tracer = tracer
        self.price_of = price_of
        self._lock = threading.Lock()
        self._spans: dict[UUID, Span] = {}
        self._models: dict[UUID, str] = {}
        self._hidden_parent: dict[UUID, UUID | None] = {}

    def _parent_span(self, parent_run_id: UUID | None) -> Span | None:
        while parent_run_id is not None:
            span = self._spans.get(parent_run_id)
            if span is not None:
                return span
            if parent_run_id not in self._hidden_parent:
                return None
            parent_run_id = self._hidden_parent[parent_run_id]
        return None

    def _start(
        self,
        name: str,
        *,
        run_id: UUID,
        parent_run_id: UUID | None,
        attributes: dict[str, Any],
        kind: SpanKind = SpanKind.INTERNAL,
    ) -> None:
        with self._lock:
            parent = self._parent_span(parent_run_id)
            ctx = trace.set_span_in_context(parent) if parent is not None else None
            if ctx is None and parent_run_id is not None:
                ctx = otel_context.Context()  # a child of an untraced run: not the caller's span
            self._spans[run_id] = self.tracer.start_span(
                name, context=ctx, kind=kind, attributes=attributes
            )

    def _pop(self, run_id: UUID) -> Span | None:
        with self._lock:
            self._hidden_parent.pop(run_id, None)
            self._models.pop(run_id, None)
            return self._spans.pop(run_id, None)

    def _fail(self, error: BaseException, *, run_id: UUID) -> None:
        with self._lock:
            model_call = run_id in self._models
        span = self._pop(run_id)
        if span is None:
            return
        if isinstance(error, GraphBubbleUp):  # an interrupt or a parent command: not a failure
            span.set_attribute("multiagent.interrupted", True)
        else:
            span.record_exception(error)
            record = vars(error).get(STAMP_KEY) if hasattr(error, "__dict__") else None
            # the error rises through the node and the graph too: the call's figures go on the
            # call's span alone, or a backend summing them over a trace counts them once per level
            if model_call and record is not None and hasattr(record, "attributes"):
                for name, value in record.attributes().items():
                    span.set_attribute(name, value)
            cancelled = isinstance(error, KeyboardInterrupt | asyncio.CancelledError)
            kind = "cancelled" if cancelled else error_kind(error)
            span.set_attribute("error.type", type(error).__name__)
            span.set_attribute("multiagent.error_kind", kind)
            said = str(error)
            described = f"{type(error).__name__}: {said}" if said else type(error).__name__
            span.set_status(Status(StatusCode.ERROR, described[:500]))
        span.end()

    # chains: the graph and its nodes
    def on_chain_start(
        self,
        serialized: dict[str, Any] | None,
        inputs: Any,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        """Open a span for a chain run (hidden LangGraph plumbing is skipped)."""
        if _HIDDEN in (tags or []):
            with self._lock:
                self._hidden_parent[run_id] = parent_run_id
            return
        name = str(kwargs.get("name") or (serialized or {}).get("name") or "chain")
        attrs = _attributes(metadata, tags)
        if (metadata or {}).get("langgraph_node") == name and isinstance(inputs, dict):
            # a node's task, named as the live view names it: the parallel ``work`` tasks of an
            # orchestration (a validation's ``validate``, a meeting's ``speak``) are told apart
            name = task_label(name, inputs)
            member = inputs.get("agent") or inputs.get("validator")
            if isinstance(member, str) and "multiagent.agent" not in attrs:
                attrs["multiagent.agent"] = member
        self._start(name, run_id=run_id, parent_run_id=parent_run_id, attributes=attrs)

    def on_chain_end(self, outputs: Any, *, run_id: UUID, **kwargs: Any) -> None:
        """Close the chain's span."""
        span = self._pop(run_id)
        if span is not None:
            span.end()

    def on_chain_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        """Close the chain's span with the error."""
        self._fail(error, run_id=run_id)

    # model calls
    def on_chat_model_start(
        self,
        serialized: dict[str, Any] | None,
        messages: list[list[BaseMessage]],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        """Open a client span for a chat model call."""
        self._model_start(run_id, parent_run_id, tags, metadata, kwargs)

    def on_llm_start(
        self,
        serialized: dict[str, Any] | None,
        prompts: list[str],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        """Open a client span for a (completion) model call."""
        self._model_start(run_id, parent_run_id, tags, metadata, kwargs)

    def _model_start(
        self,
        run_id: UUID,
        parent_run_id: UUID | None,
        tags: list[str] | None,
        metadata: dict[str, Any] | None,
        kwargs: Mapping[str, Any],
    ) -> None:
        meta = metadata or {}
        params: Mapping[str, Any] = kwargs.get("invocation_params") or {}
        model = str(
            meta.get("ls_model_name") or params.get("model_name") or params.get("model") or "model"
        )
        attrs = _attributes(meta, tags)
        attrs["gen_ai.operation.name"] = "chat"
        attrs["gen_ai.request.model"] = model
        if meta.get("ls_provider"):
            attrs["gen_ai.provider.name"] = str(meta["ls_provider"])
        with self._lock:
            self._models[run_id] = model
        self._start(
            f"chat {model}",
            run_id=run_id,
            parent_run_id=parent_run_id,
            attributes=attrs,
            kind=SpanKind.CLIENT,
        )

    def on_llm_end(self, response: LLMResult, *, run_id: UUID, **kwargs: Any) -> None:
        """Close the model call's span with tokens, cost and the cache outcome."""
        with self._lock:
            requested = self._models.get(run_id)
        span = self._pop(run_id)
        if span is None:
            return
        tokens_in, tokens_out, cached, responded = _usage(response)
        record = _stamped(response)
        if record is not None:  # the pipeline's one record of the call: the same figures
            for name, value in record.items():
                span.set_attribute(name, value)
        else:  # a model outside the pipeline: count from the reply
            model = responded or requested or ""
            price = self.price_of(model) if self.price_of is not None and model else None
            cost = 0.0 if cached or price is None else price.cost(tokens_in, tokens_out)
            span.set_attribute("gen_ai.usage.input_tokens", tokens_in)
            span.set_attribute("gen_ai.usage.output_tokens", tokens_out)
            span.set_attribute("multiagent.cost_usd", round(cost, 10))
            span.set_attribute("multiagent.cached", cached)
        if responded:
            span.set_attribute("gen_ai.response.model", responded)
        span.end()

    def on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        """Close the model call's span with the error."""
        self._fail(error, run_id=run_id)

    # tools
    def on_tool_start(
        self,
        serialized: dict[str, Any] | None,
        input_str: str,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        """Open a span for a tool call."""
        name = kwargs.get("name") or (serialized or {}).get("name") or "tool"
        attrs = {**_attributes(metadata, tags), "gen_ai.tool.name": str(name)}
        self._start(f"tool {name}", run_id=run_id, parent_run_id=parent_run_id, attributes=attrs)

    def on_tool_end(self, output: Any, *, run_id: UUID, **kwargs: Any) -> None:
        """Close the tool's span."""
        span = self._pop(run_id)
        if span is not None:
            span.end()

    def on_tool_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        """Close the tool's span with the error."""
        self._fail(error, run_id=run_id)
