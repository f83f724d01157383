"""OpenAI's chat-completions wire format: the request body, the reply, and stream chunks.

The reply comes from the same functions the in-process :class:`SimulatedChatModel` uses, so for
the same model, messages and seed the text, tool call and token counts are identical. Two things
only a server on the wire does: ``n`` choices, and a cap on output tokens that cuts a JSON answer
or a tool call's arguments (finish reason ``"length"``), as OpenAI cuts them.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, model_validator

from multiagent.sim._logprobs import token_logprobs
from multiagent.sim.model import (
    choose_tool,
    prompt_tokens,
    simulated_text,
    simulated_tool_call,
)
from multiagent.sim.text import count_tokens, split_tokens, truncate_to_tokens

_FINGERPRINT = "fp_multiagent_sim"


class ChatMessage(BaseModel):
    """One message; ``content`` is a string, a list of content parts, or absent (an assistant's
    message with tool calls only), as OpenAI accepts them."""

    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[dict[str, Any]] | None = None

    @model_validator(mode="after")
    def _has_content(self) -> ChatMessage:
        if self.content is None and self.role != "assistant":
            raise ValueError(f"a {self.role} message needs content")
        return self

    def text(self) -> str:
        """The message's text, text parts joined as LangChain's ``.text`` joins them."""
        if isinstance(self.content, str):
            return self.content
        parts = self.content or []
        return "".join(str(p.get("text", "")) for p in parts if p.get("type") == "text")


class StreamOptions(BaseModel):
    """``stream_options``: only ``include_usage`` changes anything here."""

    model_config = ConfigDict(extra="allow")

    include_usage: StrictBool = False


class ChatRequest(BaseModel):
    """The body of ``POST /v1/chat/completions`` (fields the simulator ignores are allowed)."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1)
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    stream: StrictBool | None = False
    stream_options: StreamOptions | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    response_format: dict[str, Any] | None = None
    seed: int | None = None
    logprobs: StrictBool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    stop: str | list[str] | None = None
    n: int | None = Field(default=1, ge=1, le=128)  # OpenAI's bounds
    # checked as OpenAI checks them (the simulator's answer does not depend on them)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, ge=0.0, le=1.0)

    @property
    def output_limit(self) -> int | None:
        """The request's cap on output tokens, if it gives one."""
        return self.max_completion_tokens or self.max_tokens


@dataclass(frozen=True)
class Answer:
    """The simulated reply to one request, before it is sent."""

    model: str
    content: str | None
    tool_call: tuple[str, str, str] | None  # id, function name, arguments as JSON
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int

    @property
    def pieces(self) -> list[str]:
        """Streaming pieces: of the content, or of the tool call's arguments."""
        if self.tool_call is not None:
            return split_tokens(self.tool_call[2])
        return split_tokens(self.content or "")


@dataclass(frozen=True)
class Reply:
    """The request's ``n`` answers (``choices``), sent as one completion."""

    answers: tuple[Answer, ...]
    top_logprobs: int | None = None  # None: the request did not ask for log probabilities

    @property
    def model(self) -> str:
        """The model the request named."""
        return self.answers[0].model

    @property
    def prompt_tokens(self) -> int:
        """The prompt, counted once however many choices (as OpenAI bills it)."""
        return self.answers[0].prompt_tokens

    @property
    def completion_tokens(self) -> int:
        """Every choice's output."""
        return sum(answer.completion_tokens for answer in self.answers)

    @property
    def steps(self) -> int:
        """Streaming pieces of the longest choice: how long the reply takes to send."""
        return max(len(answer.pieces) for answer in self.answers)

    @property
    def usage(self) -> dict[str, int]:
        """OpenAI's ``usage`` object."""
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        }

    def logprobs(self, index: int) -> dict[str, Any] | None:
        """Choice ``index``'s ``logprobs`` object, or None when not asked for or the choice is
        a tool call (OpenAI gives none for those)."""
        answer = self.answers[index]
        if self.top_logprobs is None or answer.tool_call is not None:
            return None
        return {"content": token_logprobs(answer.pieces, top=self.top_logprobs), "refusal": None}


def compose_reply(request: ChatRequest, *, default_seed: int) -> Reply:
    """The request's ``n`` answers; the first is the answer to the same request with ``n`` 1.

    Args:
        request: The parsed request.
        default_seed: The reply seed when the request gives none.
    """
    seed = default_seed if request.seed is None else request.seed
    # choice i is drawn with seed + i: distinct choices, each one reproducible
    choices = range(request.n or 1)
    answers = tuple(compose_answer(request, seed=seed + index) for index in choices)
    return Reply(answers, top_logprobs=(request.top_logprobs or 0) if request.logprobs else None)


def compose_answer(request: ChatRequest, *, seed: int) -> Answer:
    """Work out one reply: structured JSON, a tool call, or text.

    Whatever the kind, an output that counts more tokens than the request's cap is cut there
    with finish reason ``"length"``, as OpenAI cuts it (a cut JSON document or tool call's
    arguments does not parse; clients must see that here as they would there).

    Args:
        request: The parsed request.
        seed: The reply seed.
    """
    pairs = [(m.role, m.text()) for m in request.messages]
    usage_in = prompt_tokens(pairs)
    limit = request.output_limit
    fmt = request.response_format or {}
    if fmt.get("type") == "json_schema":
        spec = fmt.get("json_schema") or {}
        function = {"name": spec.get("name", "response"), "parameters": spec.get("schema", {})}
        _, args = simulated_tool_call(request.model, pairs, seed=seed, function=function)
        content, finish = _cut(json.dumps(args), limit, "stop")
        return Answer(request.model, content, None, finish, usage_in, count_tokens(content))
    tools = [t for t in request.tools or [] if t.get("type", "function") == "function"]
    tool = choose_tool(
        tools, request.tool_choice, after_tool_result=request.messages[-1].role == "tool"
    )
    if tool is not None:
        function = tool["function"]
        call_id, args = simulated_tool_call(request.model, pairs, seed=seed, function=function)
        arguments, finish = _cut(json.dumps(args), limit, "tool_calls")
        call = (call_id, str(function["name"]), arguments)
        return Answer(request.model, None, call, finish, usage_in, count_tokens(arguments))
    stop = [request.stop] if isinstance(request.stop, str) else request.stop
    if fmt.get("type") == "json_object":
        text, _ = simulated_text(request.model, pairs, seed=seed, stop=stop)
        text, finish = _cut(json.dumps({"answer": text}), limit, "stop")
    else:
        text, finish = simulated_text(request.model, pairs, seed=seed, max_tokens=limit, stop=stop)
    return Answer(request.model, text, None, finish, usage_in, count_tokens(text))


def _cut(output: str, limit: int | None, finish: str) -> tuple[str, str]:
    """``output`` cut to ``limit`` tokens with ``"length"``, or whole with ``finish``."""
    if limit is None or count_tokens(output) <= limit:
        return output, finish
    return truncate_to_tokens(output, limit), "length"


def completion_id() -> str:
    """A fresh ``chatcmpl-...`` id."""
    return f"chatcmpl-{uuid.uuid4().hex[:24]}"


def completion_body(reply: Reply, *, response_id: str) -> dict[str, Any]:
    """The JSON body of a non-streamed ``chat.completion``."""
    choices = []
    for index, answer in enumerate(reply.answers):
        message: dict[str, Any] = {"role": "assistant", "content": answer.content, "refusal": None}
        if answer.tool_call is not None:
            call_id, name, arguments = answer.tool_call
            function = {"name": name, "arguments": arguments}
            message["tool_calls"] = [{"id": call_id, "type": "function", "function": function}]
        choices.append(
            {
                "index": index,
                "message": message,
                "logprobs": reply.logprobs(index),
                "finish_reason": answer.finish_reason,
            }
        )
    return {
        "id": response_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": reply.model,
        "system_fingerprint": _FINGERPRINT,
        "choices": choices,
        "usage": reply.usage,
    }


def chunk_body(
    reply: Reply,
    *,
    response_id: str,
    delta: dict[str, Any] | None,
    index: int = 0,
    logprobs: dict[str, Any] | None = None,
    finish_reason: str | None = None,
    usage: bool = False,
    include_usage: bool = False,
) -> dict[str, Any]:
    """One ``chat.completion.chunk`` of choice ``index``; ``delta`` None makes the final
    usage-only chunk."""
    choice = {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish_reason}
    body: dict[str, Any] = {
        "id": response_id,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": reply.model,
        "system_fingerprint": _FINGERPRINT,
        "choices": [] if delta is None else [choice],
    }
    if include_usage:
        body["usage"] = reply.usage if usage else None
    return body


def error_body(message: str, *, kind: str, code: str | None, param: str | None = None) -> Any:
    """OpenAI's error document: ``{"error": {"message", "type", "param", "code"}}``."""
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}
