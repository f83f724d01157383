"""``PipelineChatModel``: the provider model as one agent sees it, every call through the pipeline.

It is a ``BaseChatModel`` wrapping the provider's model, so LangChain's own machinery does the
right thing around it: ``invoke`` redacts the prompt (:meth:`_convert_input`), looks the
completion cache up (``cache=`` a :class:`~multiagent.models.accounting.LedgerCacheView`), and
only on a miss decides whether to stream — under LangGraph's ``stream_mode="messages"`` a
streaming callback is attached and ``_stream`` runs, otherwise ``_generate``. Both run the
provider's call inside the retry loop, each attempt passing the shared backpressure controller,
and record tokens, cost, latency and errors. ``bind_tools`` borrows the provider's tool format,
and ``with_structured_output`` (LangChain's default, built on ``bind_tools``) works through it.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGenerationChunk, ChatResult
from langchain_core.prompt_values import ChatPromptValue, PromptValue
from langchain_core.runnables import Runnable, RunnableBinding
from langchain_core.tools import BaseTool
from pydantic import ConfigDict, Field, SkipValidation

from multiagent.models.accounting import CallIdentity, pop_headers, result_headers, usage_of
from multiagent.models.adaptive import estimate_tokens
from multiagent.models.backpressure import BackpressureController, Ticket
from multiagent.models.redaction import redact_messages
from multiagent.models.retry import RetryPolicy, async_retrying, sync_retrying

_NOT_GENERATION_PARAMS = ("stream", "streaming", "stream_usage", "include_response_headers")


class PipelineChatModel(BaseChatModel):
    """A provider chat model behind redaction, the completion cache, backpressure and retries."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    provider_model: BaseChatModel
    identity: SkipValidation[CallIdentity] = Field(exclude=True)
    controller: SkipValidation[BackpressureController] = Field(exclude=True)
    retry: RetryPolicy = Field(default_factory=RetryPolicy, exclude=True)
    base_url: str | None = None
    redact: bool = False

    @property
    def _llm_type(self) -> str:
        return "multiagent-pipeline"

    @property
    def model_name(self) -> str:
        """The provider's model name."""
        return self.identity.model

    def __repr_args__(self) -> Any:
        # LangChain puts repr(model) into every run's serialized form; the default would walk
        # the provider model, the controller and the cache on every call of a new model
        ident = self.identity
        return [("agent", ident.agent), ("provider", ident.provider), ("model", ident.model)]

    @property
    def _identifying_params(self) -> dict[str, Any]:
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

    # -- redaction: before the cache key is computed and before anything is sent ------------

    def _convert_input(self, model_input: LanguageModelInput) -> PromptValue:
        value = super()._convert_input(model_input)
        if not self.redact:
            return value
        messages, counts = redact_messages(value.to_messages())
        return ChatPromptValue(messages=messages) if counts else value

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
        if not isinstance(bound, RunnableBinding):
            raise TypeError(f"{type(self.provider_model).__name__}.bind_tools gave no binding")
        return self.bind(**bound.kwargs)

    # -- the call ------------------------------------------------------------------------------

    def _max_output(self, kwargs: dict[str, Any]) -> int | None:
        value = kwargs.get("max_tokens") or getattr(self.provider_model, "max_tokens", None)
        return value if isinstance(value, int) else None

    def _prepare(self, messages: list[BaseMessage], kwargs: dict[str, Any]) -> int:
        max_output = self._max_output(kwargs)
        self.identity.check_budget(messages, max_output=max_output)
        return estimate_tokens(messages, max_output=max_output)

    def _answered(self, message: BaseMessage, started: float, attempts: int) -> None:
        tokens_in, tokens_out = usage_of([message])
        self.identity.record_answer(
            input_tokens=tokens_in,
            output_tokens=tokens_out,
            latency_s=time.perf_counter() - started,
            attempts=attempts,
        )

    def _failed(self, exc: BaseException, started: float, attempts: int) -> None:
        self.identity.record_failure(
            exc, latency_s=time.perf_counter() - started, attempts=attempts
        )

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        tokens = self._prepare(messages, kwargs)
        started, attempts = time.perf_counter(), 0
        try:
            for attempt in sync_retrying(self.retry, model=self.model_name):
                with attempt:
                    attempts += 1
                    ticket = self.controller.acquire(tokens=tokens)
                    try:
                        result = self.provider_model._generate(
                            messages, stop=stop, run_manager=run_manager, **kwargs
                        )
                    except BaseException as exc:
                        self._settle(ticket, exc)
                        raise
                    self.controller.release(ticket, headers=result_headers(result))
        except Exception as exc:
            self._failed(exc, started, attempts)
            raise
        self._answered(result.generations[0].message, started, attempts)
        return result

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        tokens = self._prepare(messages, kwargs)
        started, attempts = time.perf_counter(), 0
        try:
            async for attempt in async_retrying(self.retry, model=self.model_name):
                with attempt:
                    attempts += 1
                    ticket = await self.controller.aacquire(tokens=tokens)
                    try:
                        result = await self.provider_model._agenerate(
                            messages, stop=stop, run_manager=run_manager, **kwargs
                        )
                    except BaseException as exc:
                        self._settle(ticket, exc)
                        raise
                    self.controller.release(ticket, headers=result_headers(result))
        except Exception as exc:
            self._failed(exc, started, attempts)
            raise
        self._answered(result.generations[0].message, started, attempts)
        return result

    def _settle(self, ticket: Ticket, exc: BaseException) -> None:
        if isinstance(exc, Exception):
            self.controller.release(ticket, error=exc)
        else:  # cancelled, interrupted: no verdict on the provider
            self.controller.cancel(ticket)

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        # run_manager is not passed on: LangChain reports the chunks we yield itself
        tokens = self._prepare(messages, kwargs)
        started, attempts = time.perf_counter(), 0
        try:
            for attempt in sync_retrying(self.retry, model=self.model_name):
                with attempt:
                    attempts += 1
                    ticket = self.controller.acquire(tokens=tokens)
                    try:
                        chunks = self.provider_model._stream(messages, stop=stop, **kwargs)
                        first = next(chunks, None)
                    except BaseException as exc:
                        self._settle(ticket, exc)
                        raise
        except Exception as exc:
            self._failed(exc, started, attempts)
            raise
        headers = pop_headers(first) if first is not None else None
        seen: list[BaseMessage] = []
        try:
            if first is not None:
                seen.append(first.message)
                yield first
                for chunk in chunks:
                    headers = pop_headers(chunk) or headers
                    seen.append(chunk.message)
                    yield chunk
        except BaseException as exc:
            self._settle(ticket, exc)
            if isinstance(exc, Exception):
                self._failed(exc, started, attempts)
            raise
        self.controller.release(ticket, headers=headers)
        self._stream_answered(seen, started, attempts)

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        tokens = self._prepare(messages, kwargs)
        started, attempts = time.perf_counter(), 0
        try:
            async for attempt in async_retrying(self.retry, model=self.model_name):
                with attempt:
                    attempts += 1
                    ticket = await self.controller.aacquire(tokens=tokens)
                    try:
                        chunks = aiter(self.provider_model._astream(messages, stop=stop, **kwargs))
                        first = await anext(chunks, None)
                    except BaseException as exc:
                        self._settle(ticket, exc)
                        raise
        except Exception as exc:
            self._failed(exc, started, attempts)
            raise
        headers = pop_headers(first) if first is not None else None
        seen: list[BaseMessage] = []
        try:
            if first is not None:
                seen.append(first.message)
                yield first
                async for chunk in chunks:
                    headers = pop_headers(chunk) or headers
                    seen.append(chunk.message)
                    yield chunk
        except BaseException as exc:
            self._settle(ticket, exc)
            if isinstance(exc, Exception):
                self._failed(exc, started, attempts)
            raise
        self.controller.release(ticket, headers=headers)
        self._stream_answered(seen, started, attempts)

    def _stream_answered(self, seen: list[BaseMessage], started: float, attempts: int) -> None:
        tokens_in, tokens_out = usage_of(seen)
        self.identity.record_answer(
            input_tokens=tokens_in,
            output_tokens=tokens_out,
            latency_s=time.perf_counter() - started,
            attempts=attempts,
        )
