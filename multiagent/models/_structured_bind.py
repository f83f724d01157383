"""The request each ladder step sends: the model bound for a forced tool call or a JSON mode.

The JSON modes are the provider's own: the request its ``with_structured_output(method=...)``
would send (``response_format`` for OpenAI-compatible servers), read off that chain and bound to
the model the node calls, so the call still goes through the pipeline. A model that cannot take
a step (no ``bind_tools``, no such method) gets ``None``; a provider error answering a step may
be a refusal of that kind of request (:func:`is_refusal`).
"""

from __future__ import annotations

import warnings
from typing import Any

from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import BaseMessage
from langchain_core.runnables import Runnable, RunnableBinding, RunnableSequence

from multiagent.models._structured_memory import Step
from multiagent.models.provider_errors import error_kind

Model = Runnable[LanguageModelInput, BaseMessage]
_CANNOT = (AttributeError, NotImplementedError, ValueError, TypeError)


def provider_of(model: Model) -> Any:
    """The model that decides request shapes: a pipeline model's provider, a wrapper's (or a
    binding's) chat model, else the model itself."""
    inner = getattr(model, "provider_model", None)
    if inner is not None:
        return inner
    bound = getattr(model, "bound", None)
    return bound if isinstance(bound, BaseChatModel) else model


def _binding_kwargs(runnable: Any) -> dict[str, Any] | None:
    """The keyword arguments a ``with_structured_output`` chain binds to its model."""
    first = runnable.first if isinstance(runnable, RunnableSequence) else runnable
    if not isinstance(first, RunnableBinding):  # a wrapper's (AdaptiveBackpressure) binding
        first = getattr(first, "bound", first)
    if isinstance(first, RunnableBinding):
        return {k: v for k, v in first.kwargs.items() if k != "ls_structured_output_format"}
    return None


def bind_step(model: Model, step: Step, *, tool: dict[str, Any]) -> Model | None:
    """The runnable that asks ``model`` for ``step``'s kind of answer, or ``None`` when it
    cannot take the step.

    Args:
        model: The model the node calls.
        step: The ladder step.
        tool: The OpenAI tool definition whose parameters are the answer's JSON schema.
    """
    function: dict[str, Any] = tool["function"]
    if step == "text":
        return model
    if step == "tool_call":
        try:
            bound: Model = model.bind_tools(  # type: ignore[attr-defined]
                [tool], tool_choice=function["name"]
            )
        except _CANNOT:
            return None
        return bound
    method = "json_schema" if step == "json_schema" else "json_mode"
    try:
        with warnings.catch_warnings():  # a model's "overriding the method" notes: we only look
            warnings.simplefilter("ignore")
            chain = provider_of(model).with_structured_output(function, method=method)
    except _CANNOT:
        return None
    kwargs = _binding_kwargs(chain)
    if not kwargs or "response_format" not in kwargs:
        return None  # a provider whose "JSON mode" is a tool call: the first step covered it
    if step == "json_mode":
        # servers that constrain JSON mode by a schema (llama.cpp) read it here
        schema = function.get("parameters") or {}
        kwargs["response_format"] = {**kwargs["response_format"], "schema": schema}
    return model.bind(**kwargs)


def is_refusal(exc: Exception, step: Step) -> bool:
    """Whether an error answering ``step`` says the model does not take requests of its kind.

    A client error (400, 404, 422) always does. A server error does only for the JSON modes:
    servers answer a ``response_format`` they do not know with a 500 (llama.cpp's does for
    ``json_schema``), while a 500 to a plain or tool-calling request is the provider failing,
    which must not cost a second call per structured answer in an outage.
    """
    if isinstance(exc, NotImplementedError):
        return True
    kind = error_kind(exc)
    return kind == "client" or (kind == "server" and step in ("json_schema", "json_mode"))
