"""The ``local`` provider: a LangChain chat model running llama.cpp in process.

Why not ``langchain_community.chat_models.ChatLlamaCpp``: langchain-community is not a
dependency here (a large package, being split up and sunset), and its model loads a new
``Llama`` per instance, where this provider must share one loaded model per process between
every agent and serialise generations on it. This one is small: messages become OpenAI-style
dicts for ``Llama.create_chat_completion``, which applies the GGUF's own chat template.

- **Tools**: a forced named tool call (``tool_choice`` naming one tool, or ``"any"`` /
  ``"required"`` with one tool) is answered through llama.cpp's grammar built from the tool's
  JSON schema, so the arguments always parse; ``"auto"`` answers in text (small models' own
  tool-call formats are not parsed).
- **Structured output**: :meth:`LocalChatModel.with_structured_output` constrains the output
  with llama.cpp's JSON-schema grammar (``response_format={"type": "json_object", "schema"}``).
- **Usage**: what llama.cpp sampled. Every call is generated as a stream (see
  :meth:`LocalChatModel._answer`), which carries no usage, so a logits processor counts the
  sampling steps and sees the full sequence (its first call's length is the prompt).
- **Ctrl-C**: the first lets a generation under way finish and starts no other; the second, or
  the run given up, stops it at its next token.
- **Price**: 0 (see :func:`multiagent.models.local_profile.local_profile`).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.messages.ai import UsageMetadata, add_ai_message_chunks
from langchain_core.output_parsers import JsonOutputParser, PydanticOutputParser
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import BaseModel, ConfigDict, Field

from multiagent._interrupt import check_stop, check_stop_now
from multiagent.errors import ConfigError
from multiagent.models.local_engine import (
    DEFAULT_N_CTX,
    LlamaEngine,
    load_engine,
    resolve_model_path,
)
from multiagent.models.local_messages import as_openai_messages, forced_tool_choice
from multiagent.policies import Settings


class _SampleCounter:
    """A llama.cpp logits processor that counts sampling steps and sees the prompt's length."""

    def __init__(self) -> None:
        self.prompt_tokens: int | None = None
        self.steps = 0

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        if self.prompt_tokens is None:
            self.prompt_tokens = len(input_ids)
        self.steps += 1
        return scores

    def usage(self, finish_reason: str | None) -> UsageMetadata:
        """Usage of a finished stream: the last step sampled the end token unless cut off."""
        prompt = self.prompt_tokens or 0
        out = self.steps if finish_reason == "length" else max(0, self.steps - 1)
        return UsageMetadata(input_tokens=prompt, output_tokens=out, total_tokens=prompt + out)


def _tool_calls(raw: list[dict[str, Any]]) -> tuple[list[Any], list[Any]]:
    """Parsed and unparseable tool calls, in llama.cpp's message shape."""
    calls: list[Any] = []
    invalid: list[Any] = []
    for item in raw:
        function = item.get("function", {})
        call_id = item.get("id") or f"call_{uuid.uuid4().hex[:24]}"
        try:
            args = json.loads(function.get("arguments") or "{}")
        except json.JSONDecodeError as exc:
            invalid.append(
                {
                    "name": function.get("name"),
                    "args": function.get("arguments"),
                    "id": call_id,
                    "error": str(exc),
                }
            )
            continue
        calls.append({"name": function.get("name", ""), "args": args, "id": call_id})
    return calls, invalid


class LocalChatModel(BaseChatModel):
    """llama.cpp in process, through the GGUF's chat template; one shared model per file.

    Attributes:
        model_name: The name ledgers and prices use.
        model_path: The GGUF file.
        n_ctx: Context size llama.cpp allocates (tokens).
        max_tokens: Output bound of a call that gives none.
        temperature: Sampling temperature (llama.cpp's server default is 0.8; lower here so a
            135M-parameter model stays on topic).
        seed: Sampling seed; ``None`` for llama.cpp's own.
    """

    model_config = ConfigDict(populate_by_name=True, arbitrary_types_allowed=True)

    model_name: str = Field(alias="model")
    model_path: str
    n_ctx: int = DEFAULT_N_CTX
    max_tokens: int | None = None
    temperature: float = 0.2
    seed: int | None = None

    @property
    def _llm_type(self) -> str:
        return "llama-cpp-local"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model_name": self.model_name, "model_path": self.model_path, "n_ctx": self.n_ctx}

    @property
    def engine(self) -> LlamaEngine:
        """The process's one loaded model for this file."""
        return load_engine(self.model_path, n_ctx=self.n_ctx)

    @property
    def context_window(self) -> int:
        """The model's context in tokens (what llama.cpp allocated)."""
        return self.engine.n_ctx

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: str | dict[str, Any] | bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Bind tools in OpenAI's format; a forced choice becomes llama.cpp's grammar call."""
        formatted = [convert_to_openai_tool(tool) for tool in tools]
        choice = forced_tool_choice(formatted, tool_choice)
        return self.bind(tools=formatted, tool_choice=choice, **kwargs)

    def with_structured_output(
        self,
        schema: dict[str, Any] | type,
        *,
        include_raw: bool = False,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, Any]:
        """Answer in ``schema`` through llama.cpp's JSON-schema grammar (JSON mode)."""
        if include_raw:
            raise ValueError("include_raw is not supported by the local provider")
        if isinstance(schema, type) and issubclass(schema, BaseModel):
            json_schema = schema.model_json_schema()
            parser: Runnable[Any, Any] = PydanticOutputParser(pydantic_object=schema)
        else:
            json_schema = convert_to_openai_tool(schema)["function"]["parameters"]
            parser = JsonOutputParser()
        bound = self.bind(response_format={"type": "json_object", "schema": json_schema})
        return bound | parser

    # -- the call ------------------------------------------------------------------------------

    def _request(
        self, messages: list[BaseMessage], stop: list[str] | None, kwargs: dict[str, Any]
    ) -> dict[str, Any]:
        """The keyword arguments of ``create_chat_completion`` (shared by both flavours)."""
        request: dict[str, Any] = {
            "messages": as_openai_messages(messages),
            "max_tokens": kwargs.get("max_tokens") or self.max_tokens,
            "temperature": kwargs.get("temperature", self.temperature),
            "stop": stop,
        }
        seed = kwargs.get("seed", self.seed)
        if seed is not None:
            request["seed"] = seed
        for key in ("tools", "tool_choice", "response_format"):
            if kwargs.get(key) is not None:
                request[key] = kwargs[key]
        if request.get("tool_choice") in ("auto", "none"):
            request.pop("tool_choice")  # text answers: the generic template handler's default
            if kwargs.get("tool_choice") == "none":
                request.pop("tools", None)
        return request

    def _check_fits(self, engine: LlamaEngine, messages: list[BaseMessage]) -> None:
        """Raise ``ConfigError`` when the prompt alone fills the model's context."""
        text = "".join(str(m.text) for m in messages)
        needed = engine.count_tokens(text) + 1
        if needed >= engine.n_ctx:
            raise ConfigError(
                f"local model {self.model_name!r} has a context of {engine.n_ctx} tokens, which "
                f"cannot hold this prompt ({needed} tokens); use a GGUF with a larger context "
                f"or shorten the input"
            )

    def _answer(
        self, messages: list[BaseMessage], stop: list[str] | None, kwargs: dict[str, Any]
    ) -> Iterator[ChatGenerationChunk]:
        """The answer as LangChain chunks, its usage on the last: both flavours' one path.

        llama.cpp generates under the engine's lock, streamed even for a non-streamed call:
        its non-streamed completion runs to the end with no way out between tokens (its
        logits processors run in a C callback, where an exception is swallowed), while a
        stream is a Python generator that stops where its reader stops reading. So a second
        Ctrl-C, or the run given up, stops the generation at the next token
        (:func:`~multiagent._interrupt.check_stop_now`); the first Ctrl-C lets it finish, but
        a call still queued for the lock starts none.
        """
        engine = self.engine
        self._check_fits(engine, messages)
        request = self._request(messages, stop, kwargs)
        counter = _SampleCounter()
        from llama_cpp import LogitsProcessorList

        finish: str | None = None
        named: set[int] = set()
        with engine.lock:
            check_stop()  # queued behind another call's generation: none starts after Ctrl-C
            parts = engine.llama.create_chat_completion(
                **request, stream=True, logits_processor=LogitsProcessorList([counter])
            )
            try:
                for part in parts:
                    check_stop_now()
                    choice = part["choices"][0]
                    finish = choice.get("finish_reason") or finish
                    chunk = _delta_chunk(choice.get("delta") or {}, named)
                    if chunk is not None:
                        yield chunk
            finally:
                parts.close()  # llama.cpp's generator ends between two tokens, lock still held
        yield ChatGenerationChunk(
            message=AIMessageChunk(
                content="",
                usage_metadata=counter.usage(finish),
                response_metadata={"model_name": self.model_name, "finish_reason": finish},
                chunk_position="last",
            )
        )

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        first, *rest = [
            chunk.message
            for chunk in self._answer(messages, stop, kwargs)
            if isinstance(chunk.message, AIMessageChunk)
        ]
        whole = add_ai_message_chunks(first, *rest)
        # the arguments parsed strictly, as llama.cpp's own reply would be: a call cut short
        # (max_tokens) is invalid, not the partial JSON LangChain reads from a stream
        calls, invalid = _tool_calls(
            [
                {"id": c["id"], "function": {"name": c["name"], "arguments": c["args"]}}
                for c in whole.tool_call_chunks
            ]
        )
        reply = AIMessage(
            content="" if calls else whole.text,
            tool_calls=calls,
            invalid_tool_calls=invalid,
            usage_metadata=whole.usage_metadata,
            response_metadata=whole.response_metadata,
        )
        return ChatResult(generations=[ChatGeneration(message=reply)])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        for chunk in self._answer(messages, stop, kwargs):
            if run_manager and chunk.text:
                run_manager.on_llm_new_token(chunk.text, chunk=chunk)
            yield chunk


def _delta_chunk(delta: dict[str, Any], named: set[int]) -> ChatGenerationChunk | None:
    """One streamed delta as a LangChain chunk (text, or a piece of a tool call).

    llama.cpp repeats a tool call's name and id on every delta, where LangChain joins the
    pieces of a call by concatenating them: only the first piece of each call (``named``
    holds the calls seen) carries them.
    """
    calls = []
    for item in delta.get("tool_calls") or []:
        index = item.get("index", 0)
        first = index not in named
        named.add(index)
        calls.append(
            {
                "name": (item.get("function") or {}).get("name") if first else None,
                "args": (item.get("function") or {}).get("arguments"),
                "id": item.get("id") if first else None,
                "index": index,
            }
        )
    content = delta.get("content") or ""
    if not content and not calls:
        return None
    return ChatGenerationChunk(message=AIMessageChunk(content=content, tool_call_chunks=calls))


def build_local_model(model: str, settings: Settings) -> LocalChatModel:
    """The ``local`` provider's model: ``model`` names a GGUF path or the packaged SmolLM2.

    Raises:
        ConfigError: The extra is missing, or the file does not exist or is not a GGUF file.
    """
    path = resolve_model_path(model)
    return LocalChatModel(model_name=model, model_path=str(path))


__all__ = ["LocalChatModel", "build_local_model"]
