"""``PipelineChatModel``: the provider model as one agent sees it, every call through the pipeline.

It is a ``BaseChatModel`` wrapping the provider's model, so LangChain's own machinery does the
right thing around it: ``invoke`` redacts the prompt (:meth:`_convert_input`), looks the
completion cache up, and only on a miss decides whether to stream — under LangGraph's
``stream_mode="messages"`` a streaming callback is attached and ``_stream`` runs, otherwise
``_generate``.

The cache is looked up where LangChain looks its own up (``_generate_with_cache``, which this
model extends; LangChain's ``cache=`` is off), with the key, the record of a hit and the cost on
each answer from :mod:`multiagent.models._cache_lookup`. On a miss the call is made by the
twins of :class:`~multiagent.models._pipeline_calls.PipelineCalls`, this model's base, which
run the provider's call inside the retry loop through the backpressure controller and record
it. ``bind_tools`` borrows the provider's tool format, and ``with_structured_output``
(LangChain's default, built on ``bind_tools``) works through it.

Tracing reads the wrapped model, not the wrapper: runs are named after the provider model's class
(``ChatOpenAI``...), carry its ``ls_provider`` and ``ls_model_name``, and every answer's
``usage_metadata`` carries its cost (``input_cost``, ``output_cost``, ``total_cost``: the fields
LangSmith reads cost from; 0 on a cache hit, as LangChain's own cache does).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.language_models.base import LangSmithParams
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult, LLMResult
from langchain_core.prompt_values import ChatPromptValue, PromptValue
from langchain_core.runnables import Runnable, RunnableBinding
from langchain_core.tools import BaseTool
from pydantic import Field, SkipValidation

from multiagent.models._answer_trace import replay_chunks
from multiagent.models._cache_lookup import (
    cache_hit,
    call_key,
    priced_answer,
    replays_hit,
    store_answer,
)
from multiagent.models._pipeline_calls import PipelineCalls
from multiagent.models.completion_cache import CompletionCache
from multiagent.models.redaction import redact_messages, redact_value

_NOT_GENERATION_PARAMS = ("stream", "streaming", "stream_usage", "include_response_headers")


class PipelineChatModel(PipelineCalls):
    """A provider chat model behind redaction, the completion cache, backpressure and retries."""

    base_url: str | None = None
    redact: bool = False
    completions: SkipValidation[CompletionCache | None] = Field(default=None, exclude=True)

    @property
    def _llm_type(self) -> str:
        # tracing and LangChain's own bookkeeping see the provider model's type, not ours
        return self.provider_model._llm_type

    def get_name(self, suffix: str | None = None, *, name: str | None = None) -> str:
        """The provider model's name (runs in LangSmith are named after it, not the wrapper)."""
        return self.provider_model.get_name(suffix, name=name or self.name)

    def __repr_args__(self) -> Any:
        # LangChain puts repr(model) into every run's serialized form; the default would walk
        # the provider model, the controller and the cache on every call of a new model
        ident = self.identity
        return [("agent", ident.agent), ("provider", ident.provider), ("model", ident.model)]

    @property
    def _identifying_params(self) -> dict[str, Any]:
        # LangChain asks for these on every call (invocation params for callbacks); they do not
        # change after construction, so they are built once for the wired model and its copies
        found = self._derived.get("params")
        if found is None:
            found = self._derived["params"] = self._params()
        return dict(found)

    def _params(self) -> dict[str, Any]:
        inner = {
            k: v
            for k, v in self.provider_model._identifying_params.items()
            if k not in _NOT_GENERATION_PARAMS
        }
        ident = self.identity
        return {
            "provider": ident.provider,
            "model": ident.model,
            "base_url": self.base_url,
            **inner,
        }

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        # the provider's own tracing parameters (provider and model names, temperature...):
        # LangChain's fallback would derive them from this class and probe missing attributes
        return self.provider_model._get_ls_params(stop=stop, **kwargs)

    # -- the completion cache -------------------------------------------------------------

    @property
    def _own_params(self) -> dict[str, Any]:
        """The model's part of LangChain's parameter string (it does not change)."""
        found = self._derived.get("invocation")
        if found is None:
            found = self._derived["invocation"] = super()._get_invocation_params()
        return found

    def _get_invocation_params(
        self, stop: list[str] | None = None, **kwargs: Any
    ) -> dict[str, Any]:
        # LangChain's own, asked on every call (the callbacks' invocation parameters), with the
        # model's part built once instead of through ``dict()`` under a warnings guard
        return {**self._own_params, "stop": stop, **kwargs}

    def _generate_with_cache(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        self._check_stop()
        cache = self.completions
        if cache is None:
            answered = super()._generate_with_cache(messages, stop, run_manager, **kwargs)
            return priced_answer(self, self._redacted(answered))
        started = time.perf_counter()
        key = call_key(self, messages, stop, kwargs)
        found = cache.get(key)
        if found is not None:
            hit = cache_hit(
                self, cache, key, found, started, run_manager, prompt=messages, kwargs=kwargs
            )
            chat = [g for g in hit.generations if isinstance(g, ChatGeneration)]
            self._replay_v2_events_for_cache_hit(chat, run_manager=run_manager, **kwargs)
            if run_manager is not None and replays_hit(self, False, run_manager, kwargs):
                for chunk in replay_chunks(chat):
                    run_manager.on_llm_new_token(chunk.text, chunk=chunk)
            return priced_answer(self, hit)
        result = self._redacted(super()._generate_with_cache(messages, stop, run_manager, **kwargs))
        store_answer(self, key, result)
        return priced_answer(self, result)

    async def _agenerate_with_cache(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        try:
            return await self._acached(messages, stop, run_manager, **kwargs)
        except asyncio.CancelledError as exc:
            # LangChain's ``agenerate`` awaits its calls in a gather that a cancellation of the
            # caller aborts, so it reports no end of the call to the callbacks: every tracer
            # kept the call's run open for good (a leak per cancelled run in a server). The
            # call reports its own end, with the record the exception carries; the callback
            # manager shields it, so it completes while the cancellation goes on.
            if run_manager is not None:
                with contextlib.suppress(Exception):
                    await run_manager.on_llm_error(exc, response=LLMResult(generations=[]))
            raise

    async def _acached(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None,
        run_manager: AsyncCallbackManagerForLLMRun | None,
        **kwargs: Any,
    ) -> ChatResult:
        self._check_stop()
        cache = self.completions
        if cache is None:
            answered = await super()._agenerate_with_cache(messages, stop, run_manager, **kwargs)
            return priced_answer(self, self._redacted(answered))
        started = time.perf_counter()
        key = call_key(self, messages, stop, kwargs)
        found = cache.get(key)  # a local read: faster than a hop to a thread
        if found is not None:
            hit = cache_hit(
                self, cache, key, found, started, run_manager, prompt=messages, kwargs=kwargs
            )
            chat = [g for g in hit.generations if isinstance(g, ChatGeneration)]
            await self._areplay_v2_events_for_cache_hit(chat, run_manager=run_manager, **kwargs)
            if run_manager is not None and replays_hit(self, True, run_manager, kwargs):
                for chunk in replay_chunks(chat):
                    await run_manager.on_llm_new_token(chunk.text, chunk=chunk)
            return priced_answer(self, hit)
        answered = await super()._agenerate_with_cache(messages, stop, run_manager, **kwargs)
        result = self._redacted(answered)
        store_answer(self, key, result)
        return priced_answer(self, result)

    # -- redaction: before the cache key is computed and before anything is sent ------------

    def _convert_input(self, model_input: LanguageModelInput) -> PromptValue:
        value = super()._convert_input(model_input)
        if not self.redact:
            return value
        messages, counts = redact_messages(value.to_messages())
        return ChatPromptValue(messages=messages) if counts else value

    def _redacted(self, result: ChatResult) -> ChatResult:
        """``result`` with the personal values of its answers replaced, when the profile redacts.

        The model was sent placeholders, yet may write values of its own (a contact it knows):
        an answer is redacted as a prompt is, before the cache or the caller (and so a
        checkpoint, memory) keeps it. Tokens streamed meanwhile are not stored as they come.
        """
        if not self.redact:
            return result
        kept: list[ChatGeneration] = []
        for generation in result.generations:
            (message,), counts = redact_messages([generation.message])
            extra = redact_value(message.additional_kwargs, record=False)
            if counts or extra != message.additional_kwargs:
                message = message.model_copy(update={"additional_kwargs": extra})
                generation = generation.model_copy(
                    update={"message": message, "text": message.text}
                )
            kept.append(generation)
        return ChatResult(generations=kept, llm_output=result.llm_output)

    # -- streaming: only where the provider model streams ----------------------------------

    def _should_stream(self, *, async_api: bool, **kwargs: Any) -> bool:
        # a provider model without native streaming (no ``_stream``) is called whole, and
        # LangChain's ``stream`` then yields its answer as one chunk (LangGraph's ``messages``
        # mode gets it from the run's end); asking its ``_stream`` would raise NotImplementedError
        inner = type(self.provider_model)
        sync_native = inner._stream is not BaseChatModel._stream
        async_native = inner._astream is not BaseChatModel._astream
        if not sync_native and not (async_api and async_native):
            return False
        return super()._should_stream(async_api=async_api, **kwargs)

    # -- tools ---------------------------------------------------------------------------

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: str | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Bind tools in the provider's own format (its ``bind_tools`` decides the shape)."""
        bound = self.provider_model.bind_tools(tools, tool_choice=tool_choice, **kwargs)
        if not isinstance(bound, RunnableBinding):  # a wrapper's (AdaptiveBackpressure) binding
            bound = getattr(bound, "bound", bound)
        if not isinstance(bound, RunnableBinding):
            raise TypeError(f"{type(self.provider_model).__name__}.bind_tools gave no binding")
        return self.bind(**bound.kwargs)
