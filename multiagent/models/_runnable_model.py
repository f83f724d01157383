"""A chat model wrapped by LangChain (``.bind(...)``, ``.with_retry()``, ``.with_fallbacks()``)
brought as the model every agent calls.

Such a wrapper is a ``Runnable``, not a ``BaseChatModel``: the pipeline calls its provider
model's ``_generate``/``_stream`` and reads its name and price, so the wrapper is held by a chat
model that invokes it (bound arguments, retries and fallbacks then apply as the user wrote
them) and is named after the chat model it wraps.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.language_models.base import LangSmithParams
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable, RunnableConfig
from langchain_core.runnables.base import RunnableBindingBase
from langchain_core.runnables.fallbacks import RunnableWithFallbacks
from langchain_core.tools import BaseTool
from pydantic import BaseModel, ConfigDict, SkipValidation


def wrapped_chat_model(runnable: Runnable[Any, Any]) -> BaseChatModel | None:
    """The chat model inside LangChain's wrappers of one, else ``None``."""
    inner: Any = runnable
    while not isinstance(inner, BaseChatModel):
        if isinstance(inner, RunnableBindingBase):  # .bind, .with_retry, .with_config
            inner = inner.bound
        elif isinstance(inner, RunnableWithFallbacks):
            inner = inner.runnable
        else:
            return None
    return inner


#: No callbacks of the wrapper's own: the pipeline's run reports the call and its tokens (with
#: the node's callbacks inherited, LangGraph's ``messages`` mode would stream them twice).
_OWN_RUNS_OFF: RunnableConfig = {"callbacks": []}


class RunnableChatModel(BaseChatModel):
    """A chat model answering through ``runnable`` (a wrapped ``inner`` chat model)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    runnable: SkipValidation[Runnable[Any, Any]]
    inner: BaseChatModel

    @property
    def _llm_type(self) -> str:
        return self.inner._llm_type

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        return self.inner._get_ls_params(stop=stop, **kwargs)

    # the request shapes are the inner model's: the pipeline binds the arguments these return
    # to its own calls, which reach the inner model through the wrapper

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: str | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """The inner model's tool binding."""
        return self.inner.bind_tools(tools, tool_choice=tool_choice, **kwargs)

    def with_structured_output(
        self, schema: dict[str, Any] | type, *, include_raw: bool = False, **kwargs: Any
    ) -> Runnable[LanguageModelInput, dict[str, Any] | BaseModel]:
        """The inner model's structured-output chain."""
        return self.inner.with_structured_output(schema, include_raw=include_raw, **kwargs)

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return _result(self.runnable.invoke(messages, _OWN_RUNS_OFF, **_with_stop(stop, kwargs)))

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        answer = await self.runnable.ainvoke(messages, _OWN_RUNS_OFF, **_with_stop(stop, kwargs))
        return _result(answer)

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        for chunk in self.runnable.stream(messages, _OWN_RUNS_OFF, **_with_stop(stop, kwargs)):
            yield _chunk(chunk)

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        options = _with_stop(stop, kwargs)
        async for chunk in self.runnable.astream(messages, _OWN_RUNS_OFF, **options):
            yield _chunk(chunk)


def _with_stop(stop: list[str] | None, kwargs: dict[str, Any]) -> dict[str, Any]:
    return kwargs if stop is None else {**kwargs, "stop": stop}


def _result(answer: Any) -> ChatResult:
    """A whole answer as a result; a wrapper answering with no message is a ``TypeError``."""
    if not isinstance(answer, AIMessage):
        raise TypeError(f"the brought model answered with {type(answer).__name__}, not a message")
    return ChatResult(generations=[ChatGeneration(message=answer)])


def _chunk(chunk: Any) -> ChatGenerationChunk:
    if isinstance(chunk, AIMessageChunk):
        return ChatGenerationChunk(message=chunk)
    if isinstance(chunk, AIMessage):  # a wrapper that does not stream yields its whole answer
        message = AIMessageChunk(
            content=chunk.content,
            additional_kwargs=chunk.additional_kwargs,
            response_metadata=chunk.response_metadata,
            tool_calls=chunk.tool_calls,
            usage_metadata=chunk.usage_metadata,
            id=chunk.id,
        )
        return ChatGenerationChunk(message=message)
    raise TypeError(f"the brought model streamed {type(chunk).__name__}, not message chunks")
