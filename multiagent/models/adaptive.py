"""``AdaptiveBackpressure``: any chat model behind the adaptive controller, as a LangChain Runnable.

Use it directly (a notebook, a script), or let :class:`multiagent.models.pipeline.ModelPipeline`
use the same shared controller inside its model wrapper. One controller exists per
(provider, base URL, model) per process (:func:`shared_controller`; asking for it again with
another configuration is an error, never silently ignored), and one pause gate per
(provider, base URL), so every agent that calls the same model is limited together.
"""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import AsyncExitStack, ExitStack
from dataclasses import asdict
from typing import Any

from langchain_core.language_models import LanguageModelInput
from langchain_core.messages import BaseMessage, BaseMessageChunk, HumanMessage, convert_to_messages
from langchain_core.prompt_values import PromptValue
from langchain_core.runnables import Runnable, RunnableConfig, RunnableSerializable
from pydantic import ConfigDict

from multiagent._metrics import get_metrics
from multiagent.errors import ConfigError
from multiagent.models._gate import ProviderGate
from multiagent.models.backpressure import BackpressureConfig, BackpressureController
from multiagent.models.retry import RetryPolicy, async_retrying, sync_retrying
from multiagent.models.tokens import prompt_tokens

#: Output tokens assumed for a request that does not cap them.
DEFAULT_OUTPUT_TOKENS = 256

_REGISTRY_LOCK = threading.Lock()
_CONTROLLERS: dict[tuple[str, str, str], BackpressureController] = {}
_GATES: dict[tuple[str, str], ProviderGate] = {}
_REMOVERS: list[Callable[[], None]] = []


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


def shared_controller(
    *,
    provider: str,
    model: str,
    base_url: str | None,
    config: BackpressureConfig,
    redis_url: str | None = None,
    fallback_fraction: float = 0.5,
) -> BackpressureController:
    """The process's controller for (provider, base URL, model), created on first use.

    Every caller of one key shares one controller, so agents calling the same model are
    limited together. A later caller must ask for the same ``config``: a controller cannot
    honour two sets of bounds at once, and quietly keeping the first would hand the second
    caller limits it never asked for. Its state is exported to the metrics store as
    ``multiagent_backpressure_*{provider,model}``.

    Args:
        provider: The provider name (``sim``, ``openai``, ...).
        model: The model name.
        base_url: The provider endpoint; ``None`` for the provider's default.
        config: The bounds the caller wants.
        redis_url: When given, the controller shared through this Redis by every process
            (:mod:`multiagent.models.backpressure_redis`); ``fallback_fraction`` of its last
            limit is what the processes use together while Redis is away.

    Raises:
        ConfigError: A controller for this key exists with another configuration; the message
            names the key, each differing field with both values, and the fix.
    """
    if redis_url:
        from multiagent.models.backpressure_redis import shared_redis_controller

        return shared_redis_controller(
            provider=provider, model=model, base_url=base_url, config=config,
            redis_url=redis_url, fallback_fraction=fallback_fraction,
        )  # fmt: skip
    endpoint = base_url or "default"
    with _REGISTRY_LOCK:
        existing = _CONTROLLERS.get((provider, model, endpoint))
        if existing is not None:
            if existing.config != config:
                raise ConfigError(_conflict(provider, endpoint, model, existing.config, config))
            return existing
        gate = _GATES.setdefault((provider, endpoint), ProviderGate(clock=time.monotonic))
        controller = BackpressureController(
            config, gate=gate, labels={"provider": provider, "model": model}
        )
        _CONTROLLERS[(provider, model, endpoint)] = controller
        _REMOVERS.append(get_metrics().add_collector(controller.samples))
    return controller


def _conflict(
    provider: str, endpoint: str, model: str, first: BackpressureConfig, second: BackpressureConfig
) -> str:
    """One line: which key, which fields differ (existing vs asked for), and the fix."""
    old, new = asdict(first), asdict(second)
    changed = ", ".join(f"{k}={old[k]!r} vs {new[k]!r}" for k in old if old[k] != new[k])
    return (
        f"backpressure controller for provider={provider!r} base_url={endpoint!r} "
        f"model={model!r} already exists with another configuration (existing vs asked: "
        f"{changed}); give every pipeline of this process the same rate_limit settings, or "
        "call multiagent.models.adaptive.reset_shared_controllers() before reconfiguring"
    )


def reset_shared_controllers() -> None:
    """Forget every shared controller and gate (a benchmark's fresh start, test isolation)."""
    with _REGISTRY_LOCK:
        _CONTROLLERS.clear()
        _GATES.clear()
        removers = list(_REMOVERS)
        _REMOVERS.clear()
    for remove in removers:
        remove()


def shared_controllers() -> dict[tuple[str, str, str], BackpressureController]:
    """Every live shared controller, keyed by (provider, model, base URL)."""
    with _REGISTRY_LOCK:
        return dict(_CONTROLLERS)


def response_headers(message: BaseMessage | BaseMessageChunk) -> Mapping[str, str] | None:
    """Provider response headers a chat model put in ``response_metadata`` (OpenAI's do when
    ``include_response_headers`` is set)."""
    headers = message.response_metadata.get("headers")
    return headers if isinstance(headers, Mapping) else None


class AdaptiveBackpressure(RunnableSerializable[LanguageModelInput, BaseMessage]):
    """A chat model whose calls pass the adaptive controller, each attempt, with retries.

    Example:
        ``limited = AdaptiveBackpressure(ChatOpenAI(model="gpt-4o-mini", max_retries=0))``
        then ``limited.invoke("hi")``, ``limited.batch([...])``, ``limited.astream(...)``.

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

    def _tokens(self, input: LanguageModelInput, kwargs: Mapping[str, Any]) -> int:
        limit = kwargs.get("max_tokens") or self.max_output_tokens
        limit = limit or getattr(self.bound, "max_tokens", None)
        return estimate_tokens(as_messages(input), max_output=limit)

    def _policy(self) -> RetryPolicy:
        return self.retry or RetryPolicy(attempts=1)

    def invoke(
        self, input: LanguageModelInput, config: RunnableConfig | None = None, **kwargs: Any
    ) -> BaseMessage:
        """Call the model once the controller lets the request go; retry what may be retried."""
        tokens = self._tokens(input, kwargs)
        for attempt in sync_retrying(self._policy(), model=self._model_label):
            with attempt, self.controller.slot(tokens=tokens) as passage:
                message = self.bound.invoke(input, config, **kwargs)
                passage.answered(headers=response_headers(message))
        return message

    async def ainvoke(
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

    def stream(
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

    async def astream(
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
