"""``AdaptiveBackpressure``: any chat model behind the adaptive controller, as a chat model.

Use it directly (a notebook, a script), or let :class:`multiagent.models.pipeline.ModelPipeline`
use the same shared controller inside its model wrapper. One controller exists per
(provider, base URL, model) per process (:func:`shared_controller`; asking for it again with
another configuration is an error, never silently ignored), and one pause gate per
(provider, base URL), so every agent that calls the same model is limited together.

The wrapper is itself a LangChain ``BaseChatModel``: ``bind_tools`` and
``with_structured_output`` work through it (the wrapped model shapes the request, the wrapper
sends it through the controller), and it can be handed to anything that takes a chat model,
the project's pipeline included.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import AsyncExitStack, ExitStack
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.language_models.base import LangSmithParams
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    BaseMessageChunk,
    HumanMessage,
    convert_to_messages,
)
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.prompt_values import PromptValue
from langchain_core.runnables import (
    Runnable,
    RunnableBinding,
    RunnableConfig,
    RunnableParallel,
    RunnableSequence,
)
from pydantic import ConfigDict

from multiagent.models._controllers import (
    reset_shared_controllers,
    shared_controller,
    shared_controllers,
)
from multiagent.models.backpressure import BackpressureConfig, BackpressureController
from multiagent.models.retry import RetryPolicy, async_retrying, sync_retrying
from multiagent.models.tokens import prompt_tokens

#: Output tokens assumed for a request that does not cap them.
DEFAULT_OUTPUT_TOKENS = 256


def as_messages(value: LanguageModelInput) -> list[BaseMessage]:
    """The messages of a model input (a string, a prompt value or a message sequence)."""
    if isinstance(value, str):
        return [HumanMessage(content=value)]
    if isinstance(value, PromptValue):
        return value.to_messages()
    return convert_to_messages(value)


def estimate_tokens(messages: Sequence[BaseMessage], *, max_output: int | None) -> int:
    """Tokens a request is charged against tokens/min: its prompt plus its output allowance."""
    return prompt_tokens(messages) + (
        max_output if max_output is not None else DEFAULT_OUTPUT_TOKENS
    )


def response_headers(message: BaseMessage | BaseMessageChunk) -> Mapping[str, str] | None:
    """Provider response headers a chat model put in ``response_metadata`` (OpenAI's do when
    ``include_response_headers`` is set)."""
    headers = message.response_metadata.get("headers")
    return headers if isinstance(headers, Mapping) else None


class AdaptiveBackpressure(BaseChatModel):
    """A chat model whose calls pass the adaptive controller, each attempt, with retries.

    Example:
        ``limited = AdaptiveBackpressure(ChatOpenAI(model="gpt-4o-mini", max_retries=0))``
        then ``limited.invoke("hi")``, ``limited.batch([...])``, ``limited.astream(...)``,
        ``limited.bind_tools([...])``, ``limited.with_structured_output(Schema)``.

    Attributes:
        bound: The wrapped chat model (its own client retries should be off).
        controller: The controller; share one between wrappers of the same provider model.
        retry: Retry policy, or ``None`` for a single attempt.
        max_output_tokens: Output allowance assumed for pacing when a call gives no
            ``max_tokens``.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    bound: Runnable[LanguageModelInput, BaseMessage]
    controller: BackpressureController
    retry: RetryPolicy | None = RetryPolicy()
    max_output_tokens: int | None = None

    def __init__(
        self,
        bound: Runnable[LanguageModelInput, BaseMessage],
        /,
        *,
        controller: BackpressureController | None = None,
        config: BackpressureConfig | None = None,
        retry: RetryPolicy | None = RetryPolicy(),
        max_output_tokens: int | None = None,
    ) -> None:
        """Wrap ``bound``; a new controller is made from ``config`` unless one is given."""
        super().__init__(
            bound=bound,
            controller=controller or BackpressureController(config),
            retry=retry,
            max_output_tokens=max_output_tokens,
        )

    @property
    def _model_label(self) -> str:
        return str(getattr(self.bound, "model_name", "") or getattr(self.bound, "model", ""))

    @property
    def model_name(self) -> str:
        """The wrapped model's name."""
        return self._model_label or type(self.bound).__name__

    @property
    def _llm_type(self) -> str:
        return "adaptive-backpressure"

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        # the wrapped model's own provider and model names, for tracing and the pipeline
        inner = getattr(self.bound, "_get_ls_params", None)
        if callable(inner):
            params: LangSmithParams = inner(stop=stop, **kwargs)
            return params
        return super()._get_ls_params(stop=stop, **kwargs)

    def _wrap(self, runnable: Runnable[LanguageModelInput, BaseMessage]) -> AdaptiveBackpressure:
        """``runnable`` (the wrapped model, bound to some request) behind this controller."""
        return AdaptiveBackpressure(
            runnable,
            controller=self.controller,
            retry=self.retry,
            max_output_tokens=self.max_output_tokens,
        )

    def bind_tools(
        self, tools: Sequence[Any], *, tool_choice: Any = None, **kwargs: Any
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """The wrapped model's ``bind_tools``, its calls still passing the controller."""
        bind_tools = getattr(self.bound, "bind_tools", None)
        if not callable(bind_tools):
            raise NotImplementedError(f"{type(self.bound).__name__} has no bind_tools")
        return self._wrap(bind_tools(tools, tool_choice=tool_choice, **kwargs))

    def with_structured_output(  # type: ignore[override]
        self, schema: Any, *, include_raw: bool = False, **kwargs: Any
    ) -> Runnable[LanguageModelInput, Any]:
        """The wrapped model's ``with_structured_output`` (any ``method`` it supports), with
        each of its model calls passing the controller."""
        chain = self.bound.with_structured_output(  # type: ignore[attr-defined]
            schema, include_raw=include_raw, **kwargs
        )
        swapped: Runnable[LanguageModelInput, Any] = self._swap(chain)
        return swapped

    def _swap(self, runnable: Any) -> Any:
        """``runnable`` with every call of the wrapped model routed through this wrapper."""
        if runnable is self.bound:
            return self
        if isinstance(runnable, RunnableBinding) and runnable.bound is self.bound:
            return self._wrap(runnable)
        if isinstance(runnable, RunnableSequence):
            return RunnableSequence(*[self._swap(step) for step in runnable.steps])
        if isinstance(runnable, RunnableParallel):
            return RunnableParallel({k: self._swap(v) for k, v in runnable.steps__.items()})
        return runnable

    # LangChain's internal entry points (used when another model wraps this one) reuse the
    # public ones below, which hold the controller's slot around the wrapped model's call

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        message = self.invoke(messages, stop=stop, **kwargs)
        return ChatResult(generations=[ChatGeneration(message=message)])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        for chunk in self.stream(messages, stop=stop, **kwargs):
            yield ChatGenerationChunk(message=_as_chunk(chunk))

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        async for chunk in self.astream(messages, stop=stop, **kwargs):
            yield ChatGenerationChunk(message=_as_chunk(chunk))

    def _tokens(self, input: LanguageModelInput, kwargs: Mapping[str, Any]) -> int:
        limit = kwargs.get("max_tokens") or self.max_output_tokens
        limit = limit or getattr(self.bound, "max_tokens", None)
        return estimate_tokens(as_messages(input), max_output=limit)

    def _policy(self) -> RetryPolicy:
        return self.retry or RetryPolicy(attempts=1)

    def invoke(  # type: ignore[override]
        self, input: LanguageModelInput, config: RunnableConfig | None = None, **kwargs: Any
    ) -> BaseMessage:
        """Call the model once the controller lets the request go; retry what may be retried."""
        tokens = self._tokens(input, kwargs)
        for attempt in sync_retrying(self._policy(), model=self._model_label):
            with attempt, self.controller.slot(tokens=tokens) as passage:
                message = self.bound.invoke(input, config, **kwargs)
                passage.answered(headers=response_headers(message))
        return message

    async def ainvoke(  # type: ignore[override]
        self, input: LanguageModelInput, config: RunnableConfig | None = None, **kwargs: Any
    ) -> BaseMessage:
        """Async :meth:`invoke`."""
        tokens = self._tokens(input, kwargs)
        async for attempt in async_retrying(self._policy(), model=self._model_label):
            with attempt:
                async with self.controller.aslot(tokens=tokens) as passage:
                    message = await self.bound.ainvoke(input, config, **kwargs)
                    passage.answered(headers=response_headers(message))
        return message

    def stream(  # type: ignore[override]
        self, input: LanguageModelInput, config: RunnableConfig | None = None, **kwargs: Any
    ) -> Iterator[BaseMessage]:
        """Stream the reply; a failure before the first chunk is retried, one after it is not.

        The slot is held from the send to the last chunk, and given back however the stream
        ends: exhausted, failed, or closed by its consumer at any point.
        """
        tokens = self._tokens(input, kwargs)
        # ``held`` keeps the slot of the attempt that got its first chunk until the stream ends
        with ExitStack() as held:
            for attempt in sync_retrying(self._policy(), model=self._model_label):
                with attempt, ExitStack() as trial:
                    passage = trial.enter_context(self.controller.slot(tokens=tokens))
                    chunks = iter(self.bound.stream(input, config, **kwargs))
                    trial.callback(_close, chunks)  # runs before the slot is given back
                    first = next(chunks, None)
                    held.push(trial.pop_all())
            headers = _Headers()
            if first is not None:
                yield headers.seen(first)
                for chunk in chunks:
                    yield headers.seen(chunk)
            passage.answered(headers=headers.value)

    async def astream(  # type: ignore[override]
        self, input: LanguageModelInput, config: RunnableConfig | None = None, **kwargs: Any
    ) -> AsyncIterator[BaseMessage]:
        """Async :meth:`stream`."""
        tokens = self._tokens(input, kwargs)
        async with AsyncExitStack() as held:
            async for attempt in async_retrying(self._policy(), model=self._model_label):
                with attempt:
                    async with AsyncExitStack() as trial:
                        passage = await trial.enter_async_context(
                            self.controller.aslot(tokens=tokens)
                        )
                        chunks = aiter(self.bound.astream(input, config, **kwargs))
                        trial.push_async_callback(_aclose, chunks)
                        first = await anext(chunks, None)
                        held.push_async_exit(trial.pop_all())
            headers = _Headers()
            if first is not None:
                yield headers.seen(first)
                async for chunk in chunks:
                    yield headers.seen(chunk)
            passage.answered(headers=headers.value)


def _as_chunk(message: BaseMessage) -> AIMessageChunk:
    """A streamed message as the chunk type LangChain's generation chunks hold."""
    if isinstance(message, AIMessageChunk):
        return message
    return AIMessageChunk(
        content=message.content,
        response_metadata=message.response_metadata,
        usage_metadata=getattr(message, "usage_metadata", None),
    )


class _Headers:
    """The first response headers a stream's chunks carry (the twins share this reading)."""

    def __init__(self) -> None:
        self.value: Mapping[str, str] | None = None

    def seen(self, chunk: BaseMessage) -> BaseMessage:
        """Note ``chunk``'s headers if none were seen yet; return the chunk."""
        self.value = self.value or response_headers(chunk)
        return chunk


def _close(chunks: Iterator[BaseMessage]) -> None:
    """Close the provider's stream (its connection) if it can be closed."""
    close = getattr(chunks, "close", None)
    if callable(close):
        close()


async def _aclose(chunks: AsyncIterator[BaseMessage]) -> None:
    """Async :func:`_close`."""
    aclose = getattr(chunks, "aclose", None)
    if callable(aclose):
        await aclose()


__all__ = [
    "DEFAULT_OUTPUT_TOKENS",
    "AdaptiveBackpressure",
    "as_messages",
    "estimate_tokens",
    "reset_shared_controllers",
    "response_headers",
    "shared_controller",
    "shared_controllers",
]
