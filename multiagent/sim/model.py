"""A deterministic simulated chat model: the embedded default provider and the test double.

It needs no network. Replies come from :mod:`multiagent.sim.text`; tool calls and structured
output from :mod:`multiagent.sim.schema`. Injected faults are the ``openai`` SDK's own
exception types carrying real HTTP responses (status, ``retry-after`` headers), so the retry and
backpressure code treats the simulated provider exactly as it treats the real one.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import httpx2
from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LangSmithParams, LanguageModelInput
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    ToolMessage,
)
from langchain_core.messages.ai import UsageMetadata
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import ConfigDict, Field, PrivateAttr

from multiagent._interrupt import wait_or_stop
from multiagent.models.local_messages import OPENAI_ROLES
from multiagent.policies import Settings
from multiagent.sim.schema import instance_of
from multiagent.sim.text import (
    count_tokens,
    digest,
    simulate_reply,
    split_tokens,
    truncate_to_tokens,
)

if TYPE_CHECKING:  # imported where a fault is raised: a third of a second of every start-up
    import openai

_SIM_URL = "http://simulated.invalid/v1/chat/completions"
#: The provider's name in traces (``ls_provider``): the name settings and ``--model`` use.
SIM_PROVIDER = "sim"


def message_pairs(messages: Sequence[BaseMessage]) -> list[tuple[str, str]]:
    """Turn LangChain messages into the ``(role, text)`` pairs the simulator works on."""
    return [(OPENAI_ROLES.get(m.type, m.type), m.text) for m in messages]


def prompt_tokens(pairs: Sequence[tuple[str, str]]) -> int:
    """Input tokens of a prompt: its text plus OpenAI's few tokens of framing per message."""
    return sum(count_tokens(content) + 4 for _, content in pairs) + 2


def rate_limit_error(retry_after_s: float, *, url: str = _SIM_URL) -> openai.RateLimitError:
    """A 429 as the OpenAI SDK raises it, with ``retry-after`` and ``retry-after-ms`` headers."""
    import openai

    headers = {
        # rounded up, as servers do, so a client that honours either header is never early
        "retry-after": str(max(1, math.ceil(retry_after_s))),
        "retry-after-ms": str(max(1, math.ceil(retry_after_s * 1000))),
    }
    response = httpx2.Response(429, headers=headers, request=httpx2.Request("POST", url))
    return openai.RateLimitError("Rate limit reached (simulated)", response=response, body=None)


def server_error(*, url: str = _SIM_URL) -> openai.InternalServerError:
    """A 500 as the OpenAI SDK raises it."""
    import openai

    response = httpx2.Response(500, request=httpx2.Request("POST", url))
    return openai.InternalServerError(
        "Internal server error (simulated)", response=response, body=None
    )


def timeout_error(*, url: str = _SIM_URL) -> openai.APITimeoutError:
    """A request timeout as the OpenAI SDK raises it."""
    import openai

    return openai.APITimeoutError(request=httpx2.Request("POST", url))


def choose_tool(
    tools: list[dict[str, Any]], tool_choice: Any, *, after_tool_result: bool
) -> dict[str, Any] | None:
    """The tool (OpenAI format) the simulator calls, or ``None`` to answer in text.

    Args:
        tools: Tools in OpenAI's ``{"type": "function", "function": {...}}`` format.
        tool_choice: OpenAI's ``tool_choice`` (``"auto"``, ``"none"``, ``"required"``, a name
            or ``{"type": "function", "function": {"name": ...}}``).
        after_tool_result: The last message is a tool's result; ``"auto"`` then answers in text.
    """
    if not tools or tool_choice == "none":
        return None
    if isinstance(tool_choice, dict):
        wanted = tool_choice.get("function", {}).get("name") or tool_choice.get("name")
        return next((t for t in tools if t["function"]["name"] == wanted), tools[0])
    if isinstance(tool_choice, str) and tool_choice not in ("auto", "any", "required"):
        return next((t for t in tools if t["function"]["name"] == tool_choice), tools[0])
    if tool_choice in ("any", "required", True):
        return tools[0]
    # "auto": call a tool unless the model has just been given a tool's result
    return None if after_tool_result else tools[0]


def simulated_tool_call(
    model: str, pairs: Sequence[tuple[str, str]], *, seed: int, function: dict[str, Any]
) -> tuple[str, dict[str, Any]]:
    """The call id and schema-valid arguments the simulator gives when it calls ``function``.

    Shared by :class:`SimulatedChatModel` and the HTTP simulator so both answer alike.
    """
    key = digest(model, list(pairs), seed, function)
    args = instance_of(
        function.get("parameters", {}),
        random.Random(key),
        context=pairs[-1][1] if pairs else "",
    )
    return f"call_{key[:24]}", args


def simulated_text(
    model: str,
    pairs: Sequence[tuple[str, str]],
    *,
    seed: int,
    max_tokens: int | None = None,
    stop: Sequence[str] | None = None,
) -> tuple[str, str]:
    """The reply text and OpenAI finish reason (``"stop"`` or ``"length"``) for ``pairs``.

    Shared by :class:`SimulatedChatModel` and the HTTP simulator so both answer alike.
    """
    full = simulate_reply(model, pairs, seed=seed)
    text = full if max_tokens is None else truncate_to_tokens(full, max(1, max_tokens))
    finish = "length" if text != full else "stop"
    for marker in stop or []:
        if marker and marker in text:
            text, finish = text.split(marker, 1)[0], "stop"
    return text, finish


class SimulatedChatModel(BaseChatModel):
    """Deterministic chat model with streaming, tool calls, usage metadata and injected faults.

    The same model name, messages and seed always give the same reply; ``invoke`` and the joined
    chunks of ``stream`` are equal. Faults are drawn from ``fault_seed`` call by call.
    """

    model_config = ConfigDict(populate_by_name=True)

    model_name: str = Field(default="gpt-4o-mini", alias="model")
    seed: int = 0
    ttft_s: float = 0.0
    token_latency_s: float = 0.0
    max_tokens: int | None = None
    rate_limit_error_rate: float = 0.0
    server_error_rate: float = 0.0
    timeout_rate: float = 0.0
    retry_after_s: float = 1.0
    fault_seed: int = 0

    _fault_rng: random.Random = PrivateAttr()
    _fault_lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    def model_post_init(self, context: Any, /) -> None:
        self._fault_rng = random.Random(self.fault_seed)

    @property
    def _llm_type(self) -> str:
        return "simulated-chat"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model_name": self.model_name, "seed": self.seed, "max_tokens": self.max_tokens}

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        # the provider's own name, as the CLI and settings call it, not LangChain's guess from
        # the class name ("simulatedchatmodel")
        params = super()._get_ls_params(stop=stop, **kwargs)
        params["ls_provider"] = SIM_PROVIDER
        return params

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: str | dict[str, Any] | bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Bind tools in OpenAI's format; the model calls one with schema-valid arguments."""
        formatted = [convert_to_openai_tool(tool) for tool in tools]
        return self.bind(tools=formatted, tool_choice=tool_choice, **kwargs)

    # -- the reply ---------------------------------------------------------------------------

    def _maybe_fail(self) -> None:
        if not (self.rate_limit_error_rate or self.server_error_rate or self.timeout_rate):
            return
        with self._fault_lock:
            draw = self._fault_rng.random()
        if draw < self.rate_limit_error_rate:
            raise rate_limit_error(self.retry_after_s)
        draw -= self.rate_limit_error_rate
        if draw < self.server_error_rate:
            raise server_error()
        draw -= self.server_error_rate
        if draw < self.timeout_rate:
            raise timeout_error()

    def _reply(
        self, messages: list[BaseMessage], stop: list[str] | None, **kwargs: Any
    ) -> AIMessage:
        pairs = message_pairs(messages)
        max_tokens = kwargs.get("max_tokens", self.max_tokens)
        last = messages[-1] if messages else None
        tool = choose_tool(
            kwargs.get("tools") or [],
            kwargs.get("tool_choice"),
            after_tool_result=isinstance(last, ToolMessage),
        )
        usage_in = prompt_tokens(pairs)
        if tool is not None:
            function = tool["function"]
            call_id, args = simulated_tool_call(
                self.model_name, pairs, seed=self.seed, function=function
            )
            out = count_tokens(json.dumps(args))
            return AIMessage(
                content="",
                tool_calls=[{"name": function["name"], "args": args, "id": call_id}],
                usage_metadata=UsageMetadata(
                    input_tokens=usage_in, output_tokens=out, total_tokens=usage_in + out
                ),
                response_metadata={"model_name": self.model_name, "finish_reason": "tool_calls"},
            )
        text, finish = simulated_text(
            self.model_name, pairs, seed=self.seed, max_tokens=max_tokens, stop=stop
        )
        out = count_tokens(text)
        return AIMessage(
            content=text,
            usage_metadata=UsageMetadata(
                input_tokens=usage_in, output_tokens=out, total_tokens=usage_in + out
            ),
            response_metadata={"model_name": self.model_name, "finish_reason": finish},
        )

    def _delay(self, message: AIMessage) -> float:
        pieces = len(split_tokens(message.text)) or 1
        return self.ttft_s + pieces * self.token_latency_s

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        self._maybe_fail()
        message = self._reply(messages, stop, **kwargs)
        if (delay := self._delay(message)) > 0:
            wait_or_stop(delay)  # Ctrl-C in the CLI ends the wait (see multiagent._interrupt)
        return ChatResult(generations=[ChatGeneration(message=message)])

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        self._maybe_fail()
        message = self._reply(messages, stop, **kwargs)
        if (delay := self._delay(message)) > 0:
            await asyncio.sleep(delay)
        return ChatResult(generations=[ChatGeneration(message=message)])

    def _chunks(self, message: AIMessage) -> Iterator[ChatGenerationChunk]:
        pieces = split_tokens(message.text)
        if message.tool_calls:
            call = message.tool_calls[0]
            yield ChatGenerationChunk(
                message=AIMessageChunk(
                    content="",
                    tool_call_chunks=[
                        {
                            "name": call["name"],
                            "args": json.dumps(call["args"]),
                            "id": call["id"],
                            "index": 0,
                        }
                    ],
                )
            )
        for piece in pieces:
            yield ChatGenerationChunk(message=AIMessageChunk(content=piece))
        yield ChatGenerationChunk(
            message=AIMessageChunk(
                content="",
                usage_metadata=message.usage_metadata,
                response_metadata=message.response_metadata,
                chunk_position="last",
            )
        )

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        self._maybe_fail()
        message = self._reply(messages, stop, **kwargs)
        if self.ttft_s > 0:
            wait_or_stop(self.ttft_s)
        for chunk in self._chunks(message):
            if chunk.message.content and self.token_latency_s > 0:
                wait_or_stop(self.token_latency_s)
            if run_manager and isinstance(chunk.message.content, str) and chunk.message.content:
                run_manager.on_llm_new_token(chunk.message.content, chunk=chunk)
            yield chunk

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        self._maybe_fail()
        message = self._reply(messages, stop, **kwargs)
        if self.ttft_s > 0:
            await asyncio.sleep(self.ttft_s)
        for chunk in self._chunks(message):
            if chunk.message.content and self.token_latency_s > 0:
                await asyncio.sleep(self.token_latency_s)
            if run_manager and isinstance(chunk.message.content, str) and chunk.message.content:
                await run_manager.on_llm_new_token(chunk.message.content, chunk=chunk)
            yield chunk


def build_simulated_model(model: str, settings: Settings) -> SimulatedChatModel:
    """The simulated provider's model ``model``, as ``settings.sim`` configures it."""
    sim = settings.sim
    return SimulatedChatModel(
        model=model,
        seed=sim.seed,
        ttft_s=sim.ttft_s,
        token_latency_s=sim.token_latency_s,
        rate_limit_error_rate=sim.rate_limit_error_rate,
        server_error_rate=sim.server_error_rate,
        timeout_rate=sim.timeout_rate,
        retry_after_s=sim.retry_after_s,
        fault_seed=sim.seed,
    )
