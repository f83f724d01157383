"""A chat model wrapped by LangChain (``.bind(...)``, ``.with_fallbacks()``) brought as the model
every agent calls.

Such a wrapper is a ``Runnable``, not a ``BaseChatModel``: the pipeline calls its provider
model's ``_generate``/``_stream`` and reads its name and price, so the wrapper is held by a chat
model that invokes it (bound arguments and fallbacks then apply as the user wrote them) and is
named after the chat model it tries first.

Every chat model in the wrapper is a *member* of it, numbered in the order LangChain tries them
(the primary first, then each fallback). A member answering for the primary is a different model
at a different price, so a call is recorded under the member that answered and each member that
failed before it gets a failed call of its own (see :mod:`multiagent.models._chain_call`): while
the wrapper runs, a :class:`ChainWatch` of the call hears each member start, fail or answer,
knowing it by the member's number in its run metadata. The watch also tells the backpressure
controller pacing the call of the failure of the member tried first (the primary, or the
fallback a paused primary is skipped for: :meth:`RunnableChatModel.from_member`), and an
answer names the member that gave it (:data:`ANSWERED_BY`), for a cache hit of it to be
recorded as that member.

Retries are the pipeline's alone (:mod:`multiagent.models.retry`): a client's own retries would
multiply every failed call by the client's attempts, each a request the rate limiter never sees.
:func:`without_own_retries` turns a member's off (``max_retries=0``, on clients built from it),
and a ``.with_retry()`` wrapper is refused where the model is brought (see
:func:`multiagent.models.factory.choose_model`).
"""

from __future__ import annotations

import functools
import itertools
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from langchain_core.callbacks import (
    AsyncCallbackManagerForLLMRun,
    BaseCallbackHandler,
    CallbackManagerForLLMRun,
)
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.language_models.base import LangSmithParams
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult, LLMResult
from langchain_core.runnables import Runnable, RunnableConfig
from langchain_core.runnables.base import RunnableBindingBase
from langchain_core.runnables.fallbacks import RunnableWithFallbacks
from langchain_core.runnables.retry import RunnableRetry
from langchain_core.tools import BaseTool
from pydantic import BaseModel, ConfigDict, SkipValidation

from multiagent.models._bp_wait import Passage
from multiagent.policies import ModelPrice

#: Run-metadata key of a member's number, by which a :class:`ChainWatch` knows it.
MEMBER_KEY = "multiagent_member"
#: Keyword argument a call of the pipeline hands its :class:`ChainWatch` in (taken out before
#: the wrapper is invoked).
WATCH_ARG = "_multiagent_chain_watch"
#: Key of the answering member's model name in an answer's ``generation_info``: kept with the
#: answer in the completion cache, so a hit of it is recorded and priced as that member.
ANSWERED_BY = "multiagent_answered_by"


def wrapped_chat_model(runnable: Runnable[Any, Any]) -> BaseChatModel | None:
    """The chat model inside LangChain's wrappers of one (the one tried first), else ``None``."""
    inner: Any = runnable
    while not isinstance(inner, BaseChatModel):
        if isinstance(inner, RunnableBindingBase):  # .bind, .with_config
            inner = inner.bound
        elif isinstance(inner, RunnableWithFallbacks):
            inner = inner.runnable
        else:
            return None
    return inner


def chat_models_in(runnable: Runnable[Any, Any]) -> list[Runnable[Any, Any]]:
    """Every chat model of a wrapper in the order LangChain tries them; a part that is neither
    a chat model nor a wrapper of one is listed as it is (the caller refuses it)."""
    if isinstance(runnable, BaseChatModel):
        return [runnable]
    if isinstance(runnable, RunnableBindingBase):
        return chat_models_in(runnable.bound)
    if isinstance(runnable, RunnableWithFallbacks):
        found = chat_models_in(runnable.runnable)
        for fallback in runnable.fallbacks:
            found.extend(chat_models_in(fallback))
        return found
    return [runnable]


def retrying_wrapper(runnable: Runnable[Any, Any]) -> bool:
    """Whether a ``.with_retry()`` wrapper is part of ``runnable``."""
    if isinstance(runnable, RunnableRetry):
        return True
    if isinstance(runnable, RunnableBindingBase):
        return retrying_wrapper(runnable.bound)
    if isinstance(runnable, RunnableWithFallbacks):
        return any(map(retrying_wrapper, [runnable.runnable, *runnable.fallbacks]))
    return False


def _rebuilt(
    runnable: Runnable[Any, Any], member: Callable[[BaseChatModel], BaseChatModel]
) -> Runnable[Any, Any]:
    """A copy of the wrapper with each chat model replaced by ``member(model)``, in try order."""
    if isinstance(runnable, BaseChatModel):
        return member(runnable)
    if isinstance(runnable, RunnableBindingBase):
        return runnable.model_copy(update={"bound": _rebuilt(runnable.bound, member)})
    if isinstance(runnable, RunnableWithFallbacks):
        first = _rebuilt(runnable.runnable, member)
        rest = [_rebuilt(fallback, member) for fallback in runnable.fallbacks]
        return runnable.model_copy(update={"runnable": first, "fallbacks": rest})
    raise TypeError(f"{type(runnable).__name__} holds no chat model")


def _without_first(runnable: Runnable[Any, Any], skip: int) -> Runnable[Any, Any] | None:
    """The wrapper trying only its members from number ``skip`` on, in the same order (each
    kept in its own bindings); ``None`` when it has no more members than that."""
    if skip <= 0:
        return runnable
    if isinstance(runnable, RunnableBindingBase):
        rest = _without_first(runnable.bound, skip)
        return None if rest is None else runnable.model_copy(update={"bound": rest})
    if not isinstance(runnable, RunnableWithFallbacks):
        return None  # a chat model: one member, skipped
    parts: list[Runnable[Any, Any]] = []
    for part in [runnable.runnable, *runnable.fallbacks]:
        kept = _without_first(part, skip)
        skip -= len(chat_models_in(part))
        if kept is not None:
            parts.append(kept)
    if len(parts) < 2:
        return parts[0] if parts else None
    return runnable.model_copy(update={"runnable": parts[0], "fallbacks": parts[1:]})


def _numbered(runnable: Runnable[Any, Any]) -> Runnable[Any, Any]:
    """The wrapper with each member's number in its run metadata."""
    count = itertools.count()

    def numbered(model: BaseChatModel) -> BaseChatModel:
        metadata = {**(model.metadata or {}), MEMBER_KEY: next(count)}
        return model.model_copy(update={"metadata": metadata})

    return _rebuilt(runnable, numbered)


def without_own_retries(model: BaseChatModel) -> BaseChatModel:
    """``model`` with its client's own retries off, where it has a ``max_retries`` field.

    Setting the field on a copy is not enough where the client was built from it at
    construction: the OpenAI SDK clients of ``langchain-openai`` models are copied with
    ``max_retries=0`` too, and clients built lazily from the field (cached properties) are
    built again by the copy. A model without the field is returned as it is.
    """
    if "max_retries" not in type(model).model_fields:
        return model
    update: dict[str, Any] = {"max_retries": 0}
    for root, endpoint in (("root_client", "client"), ("root_async_client", "async_client")):
        client = getattr(model, root, None)
        if client is not None and callable(getattr(client, "with_options", None)):
            quiet = client.with_options(max_retries=0)
            update[root] = quiet
            update[endpoint] = quiet.chat.completions
    copy = model.model_copy(update=update)
    for name in _cached_properties(type(copy)):
        copy.__dict__.pop(name, None)
    return copy


@functools.cache
def _cached_properties(cls: type) -> tuple[str, ...]:
    return tuple(
        name
        for klass in cls.__mro__
        for name, value in vars(klass).items()
        if isinstance(value, functools.cached_property)
    )


@dataclass(frozen=True)
class MemberFailure:
    """A member that failed during one call of the wrapper.

    Attributes:
        index: The member's number.
        error: What it raised.
        usage: Input and output tokens it reported before failing, if any.
        latency_s: Seconds from its start to its failure.
    """

    index: int
    error: BaseException
    usage: tuple[int, int] | None
    latency_s: float


class ChainWatch(BaseCallbackHandler):
    """What the members of a wrapper did during one call: which started last, which failed.

    Reset by each call of the wrapper (an attempt of the pipeline's retry loop), so it tells of
    the last one.

    ``passage`` is the attempt's way through the controller pacing the member tried first
    (``first``: the primary, or the fallback a paused primary was skipped for): that member's
    failure is reported through it the moment it happens, as a plain model's failure is,
    though a later member may still answer (see :mod:`multiagent.models._chain_call`).
    """

    run_inline = True  # cheap, and in the order the members run

    def __init__(self) -> None:
        super().__init__()
        self.passage: Passage | None = None
        self.first = 0
        self.begin()

    def begin(self) -> None:
        """Forget what an earlier call did."""
        self._started: dict[UUID, tuple[int, float]] = {}
        self.failures: list[MemberFailure] = []
        self.last: int | None = None

    def on_chat_model_start(
        self,
        serialized: dict[str, Any],
        messages: list[list[BaseMessage]],
        *,
        run_id: UUID,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        """Note a member starting."""
        index = (metadata or {}).get(MEMBER_KEY)
        if isinstance(index, int):
            self._started[run_id] = (index, time.perf_counter())
            self.last = index

    def on_llm_error(
        self,
        error: BaseException,
        *,
        run_id: UUID,
        response: LLMResult | None = None,
        **kwargs: Any,
    ) -> None:
        """Note a member failing, with the tokens it reported, if any."""
        found = self._started.pop(run_id, None)
        if found is None:
            return
        index, began = found
        used = _usage(response)
        self.failures.append(MemberFailure(index, error, used, time.perf_counter() - began))
        if index == self.first and self.passage is not None and isinstance(error, Exception):
            # the passage takes one report: the fallback's answer is not told of after it
            self.passage.failed(error)

    def answer_info(self, members: Sequence[tuple[str, str]]) -> dict[str, Any] | None:
        """The ``generation_info`` naming the member that answered (the one started last)."""
        if self.last is None or self.last >= len(members):
            return None
        return {ANSWERED_BY: members[self.last][1]}


def _usage(response: LLMResult | None) -> tuple[int, int] | None:
    """Input and output tokens reported in a failed run's partial response, if any."""
    seen = False
    tokens_in = tokens_out = 0
    for generations in response.generations if response is not None else []:
        for generation in generations:
            usage = getattr(getattr(generation, "message", None), "usage_metadata", None)
            if usage:
                seen = True
                tokens_in += int(usage.get("input_tokens", 0))
                tokens_out += int(usage.get("output_tokens", 0))
    return (tokens_in, tokens_out) if seen else None


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
        return cls(runnable=_numbered(runnable), inner=inner, members=tuple(members))

    def without_own_retries(self) -> RunnableChatModel:
        """The wrapper with each member's client retries off (see :func:`without_own_retries`)."""
        return self.model_copy(update={"runnable": _rebuilt(self.runnable, without_own_retries)})

    def priced(self, price_of: Callable[[str], ModelPrice]) -> RunnableChatModel:
        """The wrapper with each member's price."""
        prices = tuple(price_of(name) for _, name in self.members)
        return self.model_copy(update={"prices": prices})

    def from_member(self, index: int) -> RunnableChatModel:
        """The wrapper trying its members from number ``index`` on: a call sent past paused
        members (see :mod:`multiagent.models._chain_call`). The members keep their numbers,
        so the call's watch and record still know each one."""
        rest = _without_first(self.runnable, index)
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
