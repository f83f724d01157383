"""The pipeline model's call of its provider model: the four twins LangChain runs on a cache miss
(``_generate``, ``_agenerate``, ``_stream``, ``_astream``).

:class:`PipelineCalls` is the base of
:class:`~multiagent.models.pipeline_model.PipelineChatModel`, which looks the completion cache
up, redacts and names the runs around these calls. Each twin runs the provider's call inside the
retry loop, each attempt passing the shared backpressure controller (or a brought chain's
fallback's, where :func:`~multiagent.models._fallback_route.route_for` sends it), and records
tokens, cost, latency and errors.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, ExitStack
from typing import Any, cast

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGenerationChunk, ChatResult
from pydantic import ConfigDict, Field, PrivateAttr, SkipValidation

from multiagent._interrupt import StopRequested, check_stop, check_stop_now
from multiagent.models._bp_health import output_tokens_of, served_seconds
from multiagent.models._bp_wait import Passage
from multiagent.models._chain_call import call_in_flight, paced
from multiagent.models._fallback_route import route_for
from multiagent.models._in_flight import asked_before_send, held_at_gate
from multiagent.models.accounting import CallIdentity, pop_headers, result_headers, stamp
from multiagent.models.backpressure import BackpressureController
from multiagent.models.budget_hold import CallInFlight, not_sent
from multiagent.models.retry import RetryPolicy, async_retrying, sync_retrying


class PipelineCalls(BaseChatModel):
    """A provider chat model called behind budget holds, backpressure and retries."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    provider_model: BaseChatModel
    identity: SkipValidation[CallIdentity] = Field(exclude=True)
    controller: SkipValidation[BackpressureController] = Field(exclude=True)
    # a brought chain's fallbacks' controllers, in try order (see _fallback_route)
    fallback_controllers: SkipValidation[tuple[BackpressureController, ...]] = Field(
        default=(), exclude=True
    )
    retry: RetryPolicy = Field(default_factory=RetryPolicy, exclude=True)
    # parameters derived once; a run's copy (``model_copy``) shares the dict with the original
    _memo: dict[str, Any] = PrivateAttr(default_factory=dict)

    @property
    def _derived(self) -> dict[str, Any]:
        """:attr:`_memo`, read where pydantic keeps it: a private attribute read by name is
        found by pydantic's ``__getattr__`` after a failed lookup (~2 µs, on every call)."""
        private = cast("dict[str, dict[str, Any]]", self.__pydantic_private__)
        return private["_memo"]

    @property
    def model_name(self) -> str:
        """The provider's model name."""
        return self.identity.model

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
                    route = route_for(self)
                    with route.controller.slot(tokens=call.pace_tokens) as passage:
                        paced(call, passage, first=route.member)  # a chain's member fails by it
                        with held_at_gate(passage):
                            result = route.model._generate(
                                messages, stop=stop, run_manager=run_manager, **kwargs
                            )
                        _heard(passage, result)
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
                    route = route_for(self)
                    async with route.controller.aslot(tokens=call.pace_tokens) as passage:
                        paced(call, passage, first=route.member)
                        with held_at_gate(passage):
                            result = await route.model._agenerate(
                                messages, stop=stop, run_manager=run_manager, **kwargs
                            )
                        _heard(passage, result)
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
                        route = route_for(self)
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
                            route = route_for(self)
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


def _heard(passage: Passage, result: ChatResult) -> None:
    """Tell the controller how a whole answer went: its headers, length and the server's time."""
    headers = result_headers(result)
    passage.answered(
        headers=headers,
        output_tokens=output_tokens_of([result.generations[0].message]),
        served_s=served_seconds(headers),
    )
