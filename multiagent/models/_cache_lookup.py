"""The pipeline model's side of the completion cache: a call's key, a hit recorded as one of the
agent's calls, an answer stored, and the cost every answer carries.

The cache is looked up where LangChain looks its own up
(:meth:`~multiagent.models.pipeline_model.PipelineChatModel._generate_with_cache`; LangChain's
``cache=`` is off): LangChain would serialise the prompt with ``dumps`` for a key and rebuild the
model's parameter string on every call, where
:func:`~multiagent.models.completion_cache.messages_key` reads the same key off the messages
and the model's own parameters are read once. A hit is recorded as one of the agent's calls
(outcome ``cached``, nothing sent, cost 0, ``saved_usd`` what the answer first cost).

Under a streaming callback (LangGraph's ``messages`` mode) a hit is replayed as a stream of
chunks, as the first answer arrived, not as one whole message.

Every answer's ``usage_metadata`` carries its cost (``input_cost``, ``output_cost``,
``total_cost``: the fields LangSmith reads cost from; 0 on a cache hit, as LangChain's own cache
does), at the rates of the chain member that gave it.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.messages import BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult, Generation

from multiagent.models._answer_trace import priced, with_call_id
from multiagent.models._chain_call import answered_by
from multiagent.models.accounting import output_estimate, stamp, unstamped, usage_of
from multiagent.models.completion_cache import CompletionCache, current_held, messages_key
from multiagent.models.tokens import prompt_tokens, request_tools

if TYPE_CHECKING:
    from multiagent.models.pipeline_model import PipelineChatModel


def call_key(
    model: PipelineChatModel, messages: list[BaseMessage], stop: Any, kwargs: dict[str, Any]
) -> str:
    """The key LangChain's cache path would give: ``_get_llm_string`` and the prompt."""
    # what BaseChatModel._get_llm_string returns for a model that is not lc-serialisable
    params = {**model._own_params, "stop": stop, **kwargs}
    return messages_key(messages, str(sorted(params.items())))


def cache_hit(
    model: PipelineChatModel,
    cache: CompletionCache,
    key: str,
    found: list[Generation],
    started: float,
    run_manager: CallbackManagerForLLMRun | AsyncCallbackManagerForLLMRun | None = None,
    *,
    prompt: list[BaseMessage],
    kwargs: dict[str, Any],
) -> ChatResult:
    """A cache hit as the result of the call, recorded as one of the agent's calls.

    Its messages get this call's id (as a fresh answer would): one stream that meets the same
    cached answer twice shows it twice.
    """
    held = current_held.get()
    if held is not None:
        held.came_from(cache, key)
    # read before LangChain's conversion, which gives every answer a usage of cost 0
    used = usage_of([g.message for g in found if isinstance(g, ChatGeneration)])
    generations = model._convert_cached_generations(found)
    if run_manager is not None:
        with_call_id(generations, run_manager.run_id)
    messages = [g.message for g in generations]
    if used is None:  # estimated as the first call was, when the model reports no usage
        tools = request_tools(kwargs)
        used = (prompt_tokens(prompt, tools=tools), output_estimate(messages))
    # a chain's answer is recorded as the member that gave it (see _chain_call)
    identity = answered_by(model.provider_model, model.identity, found)
    record = identity.finish(
        "cached",
        input_tokens=0,
        output_tokens=0,
        estimated=False,
        latency_s=time.perf_counter() - started,
        attempts=0,
        saved_usd=identity.price.cost(*used),
    )
    return ChatResult(generations=[stamp(g.model_copy(), record) for g in generations])


def store_answer(model: PipelineChatModel, key: str, result: ChatResult) -> None:
    """Keep ``result``'s answers under ``key`` (held until a structured answer validates)."""
    cache = model.completions
    if cache is None:
        return
    generations = [unstamped(g) for g in result.generations]
    held = current_held.get()
    if held is None:
        cache.put(key, generations)
    else:  # a structured answer is stored once it validates (see HeldAnswers)
        held.hold(cache, key, generations)


def replays_hit(
    model: PipelineChatModel,
    async_api: bool,
    run_manager: CallbackManagerForLLMRun | AsyncCallbackManagerForLLMRun,
    kwargs: dict[str, Any],
) -> bool:
    """Whether a hit is replayed as v1 chunks: a streaming handler listens (the v2 event
    replay LangChain does itself covers the protocol handlers)."""
    if model._should_use_protocol_streaming(async_api=async_api, run_manager=run_manager, **kwargs):
        return False
    return model._should_stream(async_api=async_api, run_manager=run_manager, **kwargs)


def priced_answer(model: PipelineChatModel, result: ChatResult) -> ChatResult:
    """``result`` with each answer's cost on its ``usage_metadata`` (for LangSmith), at the
    rates of the chain member that gave it."""
    return priced(
        result, answered_by(model.provider_model, model.identity, result.generations).price
    )
