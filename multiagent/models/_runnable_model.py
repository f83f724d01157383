"""A chat model wrapped by LangChain (``.bind(...)``, ``.with_fallbacks()``) brought as the model
every agent calls.

Such a wrapper is a ``Runnable``, not a ``BaseChatModel``: the pipeline calls its provider
model's ``_generate``/``_stream`` and reads its name and price, so the wrapper is held by a chat
model that invokes it (bound arguments and fallbacks then apply as the user wrote them) and is
named after the chat model it tries first.

Every chat model in the wrapper is a *member* of it, numbered in the order LangChain tries them
(:mod:`multiagent.models._chain_members` finds, numbers and rebuilds them, and turns their
clients' own retries off). A call of the wrapper is watched member by member
(:class:`~multiagent.models._chain_watch.ChainWatch`), so it is recorded under the member that
answered and each member that failed before it gets a failed call of its own (see
:mod:`multiagent.models._chain_call`).
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
from langchain_core.tools import BaseTool
from pydantic import BaseModel, ConfigDict, SkipValidation

from multiagent.models._chain_members import (
    numbered_members,
    rebuilt,
    without_first,
    without_own_retries,
    wrapped_chat_model,
)
from multiagent.models._chain_watch import WATCH_ARG, ChainWatch
from multiagent.policies import ModelPrice

#: No callbacks of the wrapper's own: the pipeline's run reports the call and its tokens (with
#: the node's callbacks inherited, LangGraph's ``messages`` mode would stream them twice).
_OWN_RUNS_OFF: RunnableConfig = {"callbacks": []}


class RunnableChatModel(BaseChatModel):
    """A chat model answering through ``runnable`` (a wrapper of ``inner``, its first member).

    Build it with :meth:`wrapping`. ``members`` are the ``(provider, model name)`` of each
    chat model in try order; ``prices`` theirs, once the pipeline has priced them
    (:meth:`priced`).
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    runnable: SkipValidation[Runnable[Any, Any]]
    inner: BaseChatModel
    members: tuple[tuple[str, str], ...] = ()
    prices: tuple[ModelPrice, ...] = ()

    @classmethod
    def wrapping(
        cls, runnable: Runnable[Any, Any], *, members: Sequence[tuple[str, str]]
    ) -> RunnableChatModel:
        """Hold ``runnable`` (whose chat models are ``members``, in try order)."""
        inner = wrapped_chat_model(runnable)
        if inner is None:
            raise TypeError(f"{type(runnable).__name__} holds no chat model")
        return cls(runnable=numbered_members(runnable), inner=inner, members=tuple(members))

    def without_own_retries(self) -> RunnableChatModel:
        """The wrapper with each member's client retries off (see :func:`without_own_retries`)."""
        return self.model_copy(update={"runnable": rebuilt(self.runnable, without_own_retries)})

    def priced(self, price_of: Callable[[str], ModelPrice]) -> RunnableChatModel:
        """The wrapper with each member's price."""
        prices = tuple(price_of(name) for _, name in self.members)
        return self.model_copy(update={"prices": prices})

    def from_member(self, index: int) -> RunnableChatModel:
        """The wrapper trying its members from number ``index`` on: a call sent past paused
        members (see :mod:`multiagent.models._chain_call`). The members keep their numbers,
        so the call's watch and record still know each one."""
        rest = without_first(self.runnable, index)
        if rest is None:
            raise IndexError(f"the wrapper has no member {index}")
        return self.model_copy(update={"runnable": rest})

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
        config, options, watch = _call_options(stop, kwargs)
        answer = self.runnable.invoke(messages, config, **options)
        return _result(answer, None if watch is None else watch.answer_info(self.members))

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        config, options, watch = _call_options(stop, kwargs)
        answer = await self.runnable.ainvoke(messages, config, **options)
        return _result(answer, None if watch is None else watch.answer_info(self.members))

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        config, options, watch = _call_options(stop, kwargs)
        first = True
        for chunk in self.runnable.stream(messages, config, **options):
            # the member is known by the first chunk (a fallback is tried before it)
            info = watch.answer_info(self.members) if first and watch is not None else None
            first = False
            yield _chunk(chunk, info)

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        config, options, watch = _call_options(stop, kwargs)
        first = True
        async for chunk in self.runnable.astream(messages, config, **options):
            info = watch.answer_info(self.members) if first and watch is not None else None
            first = False
            yield _chunk(chunk, info)


def _call_options(
    stop: list[str] | None, kwargs: dict[str, Any]
) -> tuple[RunnableConfig, dict[str, Any], ChainWatch | None]:
    """The wrapper's config (the call's watch as its one callback, if it has one), keyword
    arguments and the watch."""
    watch = kwargs.pop(WATCH_ARG, None)
    options = kwargs if stop is None else {**kwargs, "stop": stop}
    if not isinstance(watch, ChainWatch):
        return _OWN_RUNS_OFF, options, None
    watch.begin()
    return {"callbacks": [watch]}, options, watch


def _result(answer: Any, info: dict[str, Any] | None) -> ChatResult:
    """A whole answer as a result; a wrapper answering with no message is a ``TypeError``."""
    if not isinstance(answer, AIMessage):
        raise TypeError(f"the brought model answered with {type(answer).__name__}, not a message")
    return ChatResult(generations=[ChatGeneration(message=answer, generation_info=info)])


def _chunk(chunk: Any, info: dict[str, Any] | None) -> ChatGenerationChunk:
    if isinstance(chunk, AIMessageChunk):
        return ChatGenerationChunk(message=chunk, generation_info=info)
    if isinstance(chunk, AIMessage):  # a wrapper that does not stream yields its whole answer
        message = AIMessageChunk(
            content=chunk.content,
            additional_kwargs=chunk.additional_kwargs,
            response_metadata=chunk.response_metadata,
            tool_calls=chunk.tool_calls,
            usage_metadata=chunk.usage_metadata,
            id=chunk.id,
        )
        return ChatGenerationChunk(message=message, generation_info=info)
    raise TypeError(f"the brought model streamed {type(chunk).__name__}, not message chunks")
