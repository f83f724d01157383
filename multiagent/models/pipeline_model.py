"""``PipelineChatModel``: the provider model as one agent sees it, every call through the pipeline.

It is a ``BaseChatModel`` wrapping the provider's model, so LangChain's own machinery does the
right thing around it: ``invoke`` redacts the prompt (:meth:`_convert_input`), looks the
completion cache up, and only on a miss decides whether to stream — under LangGraph's
``stream_mode="messages"`` a streaming callback is attached and ``_stream`` runs, otherwise
``_generate``.

The cache is looked up where LangChain looks its own up (``_generate_with_cache``, which this
model extends; LangChain's ``cache=`` is off): LangChain would serialise the prompt with
``dumps`` for a key and rebuild the model's parameter string on every call, where
:func:`~multiagent.models.completion_cache.messages_key` reads the same key off the messages
and the model's own parameters are read once. A hit is recorded as one of the agent's calls
(outcome ``cached``, nothing sent, cost 0, ``saved_usd`` what the answer first cost). Both run the
provider's call inside the retry loop, each attempt passing the shared backpressure controller,
and record tokens, cost, latency and errors. ``bind_tools`` borrows the provider's tool format,
and ``with_structured_output`` (LangChain's default, built on ``bind_tools``) works through it.

Under a streaming callback (LangGraph's ``messages`` mode) a hit is replayed as a stream of
chunks, as the first answer arrived, not as one whole message.

Tracing reads the wrapped model, not the wrapper: runs are named after the provider model's class
(``ChatOpenAI``...), carry its ``ls_provider`` and ``ls_model_name``, and every answer's
``usage_metadata`` carries its cost (``input_cost``, ``output_cost``, ``total_cost``: the fields
LangSmith reads cost from; 0 on a cache hit, as LangChain's own cache does).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import AsyncExitStack, ExitStack
from typing import Any, NamedTuple, cast

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.language_models.base import LangSmithParams
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import (
    ChatGeneration,
    ChatGenerationChunk,
    ChatResult,
    Generation,
    LLMResult,
)
from langchain_core.prompt_values import ChatPromptValue, PromptValue
from langchain_core.runnables import Runnable, RunnableBinding
from langchain_core.tools import BaseTool
from pydantic import ConfigDict, Field, PrivateAttr, SkipValidation

from multiagent._interrupt import StopRequested, check_stop, check_stop_now
from multiagent.models._answer_trace import priced, replay_chunks, with_call_id
from multiagent.models._bp_health import output_tokens_of, served_seconds
from multiagent.models._chain_call import answered_by, call_in_flight, paced
from multiagent.models._in_flight import asked_before_send, held_at_gate
from multiagent.models._runnable_model import RunnableChatModel
from multiagent.models.accounting import (
    CallIdentity,
    output_estimate,
    pop_headers,
    result_headers,
    stamp,
    unstamped,
    usage_of,
)
from multiagent.models.backpressure import BackpressureController
from multiagent.models.budget_hold import CallInFlight, not_sent
from multiagent.models.completion_cache import CompletionCache, current_held, messages_key
from multiagent.models.redaction import redact_messages, redact_value
from multiagent.models.retry import RetryPolicy, async_retrying, sync_retrying
from multiagent.models.tokens import prompt_tokens, request_tools

_NOT_GENERATION_PARAMS = ("stream", "streaming", "stream_usage", "include_response_headers")


class Route(NamedTuple):
    """Where an attempt is sent: the number of the chain member tried first (0: the primary,
    or a model without fallbacks), the model called and the controller pacing it."""

    member: int
    model: BaseChatModel
    controller: BackpressureController


class PipelineChatModel(BaseChatModel):
    """A provider chat model behind redaction, the completion cache, backpressure and retries."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    provider_model: BaseChatModel
    identity: SkipValidation[CallIdentity] = Field(exclude=True)
    controller: SkipValidation[BackpressureController] = Field(exclude=True)
    # a brought chain's fallbacks' controllers, in try order (see _route)
    fallback_controllers: SkipValidation[tuple[BackpressureController, ...]] = Field(
        default=(), exclude=True
    )
    retry: RetryPolicy = Field(default_factory=RetryPolicy, exclude=True)
    base_url: str | None = None
    redact: bool = False
    completions: SkipValidation[CompletionCache | None] = Field(default=None, exclude=True)
    # parameters derived once; a run's copy (``model_copy``) shares the dict with the original
    _memo: dict[str, Any] = PrivateAttr(default_factory=dict)

    @property
    def _derived(self) -> dict[str, Any]:
        """:attr:`_memo`, read where pydantic keeps it: a private attribute read by name is
        found by pydantic's ``__getattr__`` after a failed lookup (~2 µs, on every call)."""
        private = cast("dict[str, dict[str, Any]]", self.__pydantic_private__)
        return private["_memo"]

    @property
    def _llm_type(self) -> str:
        # tracing and LangChain's own bookkeeping see the provider model's type, not ours
        return self.provider_model._llm_type

    def get_name(self, suffix: str | None = None, *, name: str | None = None) -> str:
        """The provider model's name (runs in LangSmith are named after it, not the wrapper)."""
        return self.provider_model.get_name(suffix, name=name or self.name)

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

    def _cache_key(self, messages: list[BaseMessage], stop: Any, kwargs: dict[str, Any]) -> str:
        """The key LangChain's cache path would give: ``_get_llm_string`` and the prompt."""
        # what BaseChatModel._get_llm_string returns for a model that is not lc-serialisable
        params = {**self._own_params, "stop": stop, **kwargs}
        return messages_key(messages, str(sorted(params.items())))

    def _hit(
        self,
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
        generations = self._convert_cached_generations(found)
        if run_manager is not None:
            with_call_id(generations, run_manager.run_id)
        messages = [g.message for g in generations]
        if used is None:  # estimated as the first call was, when the model reports no usage
            tools = request_tools(kwargs)
            used = (prompt_tokens(prompt, tools=tools), output_estimate(messages))
        # a chain's answer is recorded as the member that gave it (see _chain_call)
        identity = answered_by(self.provider_model, self.identity, found)
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

    def _store(self, key: str, result: ChatResult) -> None:
        cache = self.completions
        if cache is None:
            return
        generations = [unstamped(g) for g in result.generations]
        held = current_held.get()
        if held is None:
            cache.put(key, generations)
        else:  # a structured answer is stored once it validates (see HeldAnswers)
            held.hold(cache, key, generations)

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
            return self._priced(self._redacted(answered))
        started = time.perf_counter()
        key = self._cache_key(messages, stop, kwargs)
        found = cache.get(key)
        if found is not None:
            hit = self._hit(cache, key, found, started, run_manager, prompt=messages, kwargs=kwargs)
            chat = [g for g in hit.generations if isinstance(g, ChatGeneration)]
            self._replay_v2_events_for_cache_hit(chat, run_manager=run_manager, **kwargs)
            if run_manager is not None and self._replays(False, run_manager, kwargs):
                for chunk in replay_chunks(chat):
                    run_manager.on_llm_new_token(chunk.text, chunk=chunk)
            return self._priced(hit)
        result = self._redacted(super()._generate_with_cache(messages, stop, run_manager, **kwargs))
        self._store(key, result)
        return self._priced(result)

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
            return self._priced(self._redacted(answered))
        started = time.perf_counter()
        key = self._cache_key(messages, stop, kwargs)
        found = cache.get(key)  # a local read: faster than a hop to a thread
        if found is not None:
            hit = self._hit(cache, key, found, started, run_manager, prompt=messages, kwargs=kwargs)
            chat = [g for g in hit.generations if isinstance(g, ChatGeneration)]
            await self._areplay_v2_events_for_cache_hit(chat, run_manager=run_manager, **kwargs)
            if run_manager is not None and self._replays(True, run_manager, kwargs):
                for chunk in replay_chunks(chat):
                    await run_manager.on_llm_new_token(chunk.text, chunk=chunk)
            return self._priced(hit)
        answered = await super()._agenerate_with_cache(messages, stop, run_manager, **kwargs)
        result = self._redacted(answered)
        self._store(key, result)
        return self._priced(result)

    def _replays(
        self,
        async_api: bool,
        run_manager: CallbackManagerForLLMRun | AsyncCallbackManagerForLLMRun,
        kwargs: dict[str, Any],
    ) -> bool:
        """Whether a hit is replayed as v1 chunks: a streaming handler listens (the v2 event
        replay LangChain does itself covers the protocol handlers)."""
        if self._should_use_protocol_streaming(
            async_api=async_api, run_manager=run_manager, **kwargs
        ):
            return False
        return self._should_stream(async_api=async_api, run_manager=run_manager, **kwargs)

    def _priced(self, result: ChatResult) -> ChatResult:
        """``result`` with each answer's cost on its ``usage_metadata`` (for LangSmith), at the
        rates of the chain member that gave it."""
        return priced(
            result, answered_by(self.provider_model, self.identity, result.generations).price
        )

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

    # -- the call ------------------------------------------------------------------------------
    # One shape for the four twins: a CallInFlight holds the budget and makes the one record on
    # any exit; each attempt holds a controller slot in a context manager, so an exception,
    # a cancellation or a stream closed early gives both back by construction.

    def _check_stop(self) -> None:
        """Ctrl-C: no call starts (see multiagent._interrupt); the stopped call, whose span
        LangChain already opened, is recorded as cancelled."""
        try:
            check_stop()
        except StopRequested as exc:
            not_sent(self.identity, exc)
            raise

    def _asked_before_send(self) -> contextlib.AbstractContextManager[None]:
        """Around a call's attempts: a request that waited for a place at an in-flight gate
        asks the run's shared budget again before it is sent (a queue entry's guard: the entry
        may have been taken over meanwhile, see multiagent.models._in_flight)."""
        ledger = self.identity.ledger
        return asked_before_send(None if ledger is None else ledger.shared)

    def _call(self, messages: list[BaseMessage], kwargs: dict[str, Any]) -> CallInFlight:
        self._check_stop()
        own = getattr(self.provider_model, "max_tokens", None)
        own_max = own if isinstance(own, int) else None
        # a brought model with fallbacks records the member that answered (see _chain_call)
        return call_in_flight(
            self.provider_model, self.identity, messages, kwargs, default_max_output=own_max
        )

    def _route(self) -> Route:
        """Where an attempt goes: to the provider model through its controller, unless a
        ``Retry-After`` pauses that controller's endpoint and the model is a brought chain:
        then to the chain from its first fallback whose endpoint is open, through that
        fallback's controller (see multiagent.models._chain_call). With every member paused
        the attempt waits at the primary's gate, as a plain model's would."""
        controller = self.controller
        if not self.fallback_controllers or controller.paused_for() <= 0:
            return Route(0, self.provider_model, controller)
        for member, other in enumerate(self.fallback_controllers, 1):
            if other.paused_for() <= 0:
                return Route(member, self._from_member(member), other)
        return Route(0, self.provider_model, controller)

    def _from_member(self, member: int) -> BaseChatModel:
        """The brought chain trying its members from ``member`` on (built once per model)."""
        key = f"from_member_{member}"
        found = self._derived.get(key)
        if found is None:
            chain = cast("RunnableChatModel", self.provider_model)
            found = self._derived[key] = chain.from_member(member)
        return found  # type: ignore[no-any-return]

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        with self._call(messages, kwargs) as call, self._asked_before_send():
            for attempt in sync_retrying(self.retry, model=self.model_name):
                with attempt:
                    call.attempts += 1
                    route = self._route()
                    with route.controller.slot(tokens=call.pace_tokens) as passage:
                        paced(call, passage, first=route.member)  # a chain's member fails by it
                        with held_at_gate(passage):
                            result = route.model._generate(
                                messages, stop=stop, run_manager=run_manager, **kwargs
                            )
                        headers = result_headers(result)
                        passage.answered(
                            headers=headers,
                            output_tokens=output_tokens_of([result.generations[0].message]),
                            served_s=served_seconds(headers),
                        )
            return self._answered(call, result)

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        with self._call(messages, kwargs) as call, self._asked_before_send():
            async for attempt in async_retrying(self.retry, model=self.model_name):
                with attempt:
                    call.attempts += 1
                    route = self._route()
                    async with route.controller.aslot(tokens=call.pace_tokens) as passage:
                        paced(call, passage, first=route.member)
                        with held_at_gate(passage):
                            result = await route.model._agenerate(
                                messages, stop=stop, run_manager=run_manager, **kwargs
                            )
                        headers = result_headers(result)
                        passage.answered(
                            headers=headers,
                            output_tokens=output_tokens_of([result.generations[0].message]),
                            served_s=served_seconds(headers),
                        )
            return self._answered(call, result)

    @staticmethod
    def _answered(call: CallInFlight, result: ChatResult) -> ChatResult:
        call.seen = [g.message for g in result.generations[:1]]
        stamp(result.generations[0], call.answered())
        return result

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        # run_manager is not passed on: LangChain reports the chunks we yield itself
        with self._call(messages, kwargs) as call, ExitStack() as stack:
            with self._asked_before_send():  # nothing is yielded within
                for attempt in sync_retrying(self.retry, model=self.model_name):
                    with attempt:
                        call.attempts += 1
                        # the slot outlives the retry loop (the stream is read after it), so it
                        # goes on the stack; a failed attempt closes it before the next one
                        attempt_stack = ExitStack()
                        route = self._route()
                        with attempt_stack:
                            passage = attempt_stack.enter_context(
                                route.controller.slot(tokens=call.pace_tokens)
                            )
                            paced(call, passage, first=route.member)
                            source = self._streaming(kwargs, route.model)
                            chunks = source._stream(messages, stop=stop, **kwargs)
                            with held_at_gate(passage):  # the request is sent by the first read
                                first = next(chunks, None)
                            # unwound in reverse: the provider's stream closes, then the slot
                            stack.push(attempt_stack.pop_all())
                            stack.callback(_close, chunks)
            headers = None
            for chunk in _chain(first, chunks):
                # the run given up, or a second Ctrl-C, ends the stream; the first Ctrl-C
                # lets an answer already being streamed finish and keeps it (see
                # multiagent._interrupt)
                check_stop_now()
                headers = pop_headers(chunk) or headers
                call.seen.append(chunk.message)
                yield chunk
            passage.answered(headers=headers, output_tokens=output_tokens_of(call.seen))
            stack.close()  # the slot goes back with the answer's headers before the record
            yield self._last_chunk(call)

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        with self._call(messages, kwargs) as call:
            async with AsyncExitStack() as stack:
                with self._asked_before_send():  # nothing is yielded within
                    async for attempt in async_retrying(self.retry, model=self.model_name):
                        with attempt:
                            call.attempts += 1
                            attempt_stack = AsyncExitStack()
                            route = self._route()
                            async with attempt_stack:
                                passage = await attempt_stack.enter_async_context(
                                    route.controller.aslot(tokens=call.pace_tokens)
                                )
                                paced(call, passage, first=route.member)
                                source = self._streaming(kwargs, route.model)
                                chunks = aiter(source._astream(messages, stop=stop, **kwargs))
                                with held_at_gate(passage):
                                    first = await anext(chunks, None)
                                stack.push_async_exit(attempt_stack.pop_all())
                                stack.push_async_callback(_aclose, chunks)
                headers = None
                if first is not None:
                    headers = pop_headers(first)
                    call.seen.append(first.message)
                    yield first
                async for chunk in chunks:
                    headers = pop_headers(chunk) or headers
                    call.seen.append(chunk.message)
                    yield chunk
                passage.answered(headers=headers, output_tokens=output_tokens_of(call.seen))
                await stack.aclose()
            yield self._last_chunk(call)

    def _streaming(self, kwargs: dict[str, Any], model: BaseChatModel) -> BaseChatModel:
        """The model to stream a request of ``kwargs`` from, ``model`` routed to.

        OpenAI's client cannot include response headers (asked for: they carry the rate limits)
        in a stream with a ``response_format``, the structured ladder's JSON steps under
        LangGraph's ``messages`` mode: ``langchain_openai`` warns on every such call and
        streams without them. Such a stream is asked of a copy that does not ask for them.
        """
        inner = self.provider_model
        if (
            model is not inner
            or "response_format" not in kwargs
            or not getattr(inner, "include_response_headers", 0)
        ):
            return model
        found = self._derived.get("headerless")
        if found is None:
            update = {"include_response_headers": False}
            found = self._derived["headerless"] = inner.model_copy(update=update)
        return found  # type: ignore[no-any-return]

    @staticmethod
    def _last_chunk(call: CallInFlight) -> ChatGenerationChunk:
        """An empty closing chunk carrying the call's record (for tracing)."""
        return stamp(ChatGenerationChunk(message=AIMessageChunk(content="")), call.answered())


def _chain(
    first: ChatGenerationChunk | None, rest: Iterator[ChatGenerationChunk]
) -> Iterator[ChatGenerationChunk]:
    if first is None:
        return
    yield first
    yield from rest


def _close(chunks: Iterator[ChatGenerationChunk]) -> None:
    close = getattr(chunks, "close", None)
    if close is not None:
        close()


async def _aclose(chunks: AsyncIterator[ChatGenerationChunk]) -> None:
    close = getattr(chunks, "aclose", None)
    if close is not None:
        await close()
