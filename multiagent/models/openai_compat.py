"""``ChatOpenAI`` for OpenAI-compatible servers: the output bound under both of its names, and a
stream the server cut short taken as a failure.

langchain-openai sends a call's ``max_tokens`` as ``max_completion_tokens`` (OpenAI's newer
name). llama-cpp-python's server reads only ``max_tokens`` and ignores the other, so a bounded
call ran until the context was full and timed out (seen against it, with the packaged SmolLM2).
With a base URL set, the bound is sent under both names; OpenAI itself keeps the plain model.

llama-cpp-python's server answers one request at a time and, by default
(``--interrupt_requests``), ends a stream with ``[DONE]`` as soon as another request waits: the
stream closes cleanly with no ``finish_reason``. Taken as it came, each of the agents or
validators that run in parallel got an empty or cut answer and the run went on as if they had
said it. A stream that ends without a ``finish_reason`` raises :class:`StreamCutError` (a
connection error: retried); chunks with nothing in them are held back until something does come,
so a stream cut before its first token fails on its first read, inside the pipeline's retry loop.
A stream with no chunk at all is another failure: the same server fails a request it has
accepted (a prompt and ``max_tokens`` over its context window) by ending the stream before its
first chunk, with the reason only in its own log; the error says so and names the setting that
keeps prompts inside the window.

The same server repeats a tool call's name in every delta of its arguments (OpenAI sends it in
the first), so the merged call was named ``submit_plansubmit_plan...`` and its estimated output
tokens counted the name once per delta (a 160-token answer recorded as 330); a repeated name is
dropped from the later deltas.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

from langchain_core.language_models import LanguageModelInput
from langchain_core.messages import AIMessageChunk
from langchain_core.outputs import ChatGenerationChunk
from langchain_openai import ChatOpenAI


class StreamCutError(ConnectionError):
    """A streamed answer that ended without a ``finish_reason``: the server cut it short."""


class _StreamWatch:
    """What a stream has shown so far: chunks held back, and whether it finished."""

    def __init__(self) -> None:
        self.held: list[ChatGenerationChunk] = []
        self.chunks = 0
        self.finished = False
        self.names: dict[int | None, str] = {}

    def take(self, chunk: ChatGenerationChunk) -> list[ChatGenerationChunk]:
        """The chunks to pass on now (none while only empty chunks have come)."""
        self.chunks += 1
        self.finished = self.finished or bool((chunk.generation_info or {}).get("finish_reason"))
        message = chunk.message
        if isinstance(message, AIMessageChunk):
            self._named_once(message)
        self.held.append(chunk)
        if not (
            self.finished
            or message.content
            or (isinstance(message, AIMessageChunk) and message.tool_call_chunks)
        ):
            return []
        passed, self.held = self.held, []
        return passed

    def _named_once(self, message: AIMessageChunk) -> None:
        """Drop a tool call's name from a delta that repeats it."""
        for part in message.tool_call_chunks:
            name, index = part.get("name"), part.get("index")
            if name and self.names.get(index) == name:
                part["name"] = None
                function_call = message.additional_kwargs.get("function_call")
                if isinstance(function_call, dict):
                    function_call["name"] = ""
            elif name:
                self.names[index] = name

    def end(self) -> list[ChatGenerationChunk]:
        """The chunks still held, once the stream has ended.

        Raises:
            StreamCutError: The stream ended without a ``finish_reason``.
        """
        if not self.chunks:
            raise StreamCutError(
                "the server accepted the request but sent no part of an answer (an empty "
                "stream); llama-cpp-python's server does so when the prompt and max_tokens do "
                "not fit its context window (--n_ctx; its log names the cause): set "
                "models.context_window_tokens to that size so prompts are cut to fit"
            )
        if not self.finished:
            raise StreamCutError(
                "the server ended the stream before the answer finished (no finish_reason); "
                "llama-cpp-python's server does so when another request arrives unless it is "
                "started with --interrupt_requests false"
            )
        return self.held


class CompatibleChatOpenAI(ChatOpenAI):
    """``ChatOpenAI`` that also sends ``max_tokens`` for servers that read only that name, and
    raises :class:`StreamCutError` for a stream that ends unfinished."""

    def _get_request_payload(
        self, input_: LanguageModelInput, *, stop: list[str] | None = None, **kwargs: Any
    ) -> dict[str, Any]:
        payload: dict[str, Any] = super()._get_request_payload(input_, stop=stop, **kwargs)
        bound = payload.get("max_completion_tokens")
        if bound is not None:
            payload.setdefault("max_tokens", bound)
        return payload

    def _stream(self, *args: Any, **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        watch = _StreamWatch()
        for chunk in super()._stream(*args, **kwargs):
            yield from watch.take(chunk)
        yield from watch.end()

    async def _astream(self, *args: Any, **kwargs: Any) -> AsyncIterator[ChatGenerationChunk]:
        watch = _StreamWatch()
        async for chunk in super()._astream(*args, **kwargs):
            for passed in watch.take(chunk):
                yield passed
        for passed in watch.end():
            yield passed


__all__ = ["CompatibleChatOpenAI", "StreamCutError"]
