"""Ctrl-C and the in-process ``local`` provider, against a stand-in for ``llama_cpp.Llama`` that
generates as llama.cpp does (a logits processor call per sampling step, a Python generator when
streamed, a finished reply otherwise): a second Ctrl-C stops a non-streamed generation at its
next token, a call queued behind another's generation starts none after the first, and a tool
call assembled from llama.cpp's deltas keeps its name."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import AIMessageChunk, HumanMessage

from multiagent import _interrupt
from multiagent._interrupt import StopRequested
from multiagent.models import local
from multiagent.models.local import LocalChatModel
from multiagent.models.local_engine import LlamaEngine

pytest.importorskip("llama_cpp", reason="the local extra is not installed")

PROMPT = [HumanMessage("Count to a thousand.")]
TOOL = {"type": "function", "function": {"name": "submit_plan", "parameters": {}}}


class FakeLlama:
    """Generates ``tokens`` (``max_tokens`` of them when ``None``) one sampling step at a time;
    ``on_token`` runs before the token numbered by its key is handed out."""

    def __init__(
        self,
        *,
        tokens: list[str] | None = None,
        tool: str | None = None,
        on_token: dict[int, Any] | None = None,
    ) -> None:
        self.tokens, self.tool, self.on_token = tokens, tool, on_token or {}
        self.handed_out = 0
        self.closed = False
        self.calls = 0

    def tokenize(self, text: bytes, **_: Any) -> list[int]:
        return list(range(len(text.split())))

    def create_chat_completion(
        self, *, messages: list[dict[str, Any]], stream: bool = False, **kwargs: Any
    ) -> Any:
        self.calls += 1
        tokens = self.tokens or ["tick "] * kwargs["max_tokens"]
        steps = self._steps(tokens, len(messages) * 10, kwargs.get("logits_processor") or [])
        if stream:
            return self._stream(steps)
        text = "".join(steps)  # llama.cpp's non-streamed completion: to its end, no way out
        message: dict[str, Any] = {"role": "assistant", "content": text}
        return {
            "choices": [{"message": message, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 10, "completion_tokens": self.handed_out},
        }

    def _steps(self, tokens: list[str], prompt: int, processors: list[Any]) -> Iterator[str]:
        n = 0
        for n, token in enumerate(tokens, start=1):
            for processor in processors:
                processor(list(range(prompt + n - 1)), None)
            if n in self.on_token:
                self.on_token[n]()
            self.handed_out = n
            yield token
        for processor in processors:  # the end-of-generation token is sampled, not kept
            processor(list(range(prompt + n)), None)

    def _stream(self, steps: Iterator[str]) -> Iterator[dict[str, Any]]:
        try:
            yield {"choices": [{"delta": {"role": "assistant"}, "finish_reason": None}]}
            for piece in steps:
                if self.tool is None:
                    delta: dict[str, Any] = {"content": piece}
                else:  # llama.cpp repeats the call's name and id on every delta
                    function = {"name": self.tool, "arguments": piece}
                    delta = {"tool_calls": [{"index": 0, "id": "call_0", "function": function}]}
                yield {"choices": [{"delta": delta, "finish_reason": None}]}
            yield {"choices": [{"delta": {}, "finish_reason": "stop"}]}
        finally:
            self.closed = True


def _local_model(llama: FakeLlama, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, LlamaEngine]:
    engine = LlamaEngine(path=Path("fake.gguf"), llama=llama, n_ctx=4096)
    monkeypatch.setattr(local, "load_engine", lambda *_a, **_k: engine)
    return LocalChatModel(model="fake", model_path="fake.gguf", max_tokens=10_000), engine


def test_a_second_ctrl_c_stops_a_non_streamed_generation_at_its_next_token(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # the first Ctrl-C lets the generation go on; the second lands before token 5
    llama = FakeLlama(
        on_token={
            2: lambda: monkeypatch.setattr(_interrupt, "_requested", True),
            5: lambda: monkeypatch.setattr(_interrupt, "_now", True),
        }
    )
    model, engine = _local_model(llama, monkeypatch)
    with pytest.raises(StopRequested):
        model.invoke(PROMPT)  # without the stop: all 10,000 tokens
    assert llama.handed_out == 5  # no token after the one the stop met
    assert llama.closed  # llama.cpp's generator ended, between two tokens
    assert not engine.lock.locked()  # the next call may generate


def test_a_call_queued_behind_a_generation_starts_none_after_the_first_ctrl_c(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    llama = FakeLlama(tokens=["a ", "b"])
    model, _engine = _local_model(llama, monkeypatch)
    # asked while this call waited for the model (the pipeline's check at its start passed)
    monkeypatch.setattr(_interrupt, "_requested", True)
    with pytest.raises(StopRequested):
        model.invoke(PROMPT)
    assert llama.calls == 0


def test_a_non_streamed_answer_is_generated_as_a_stream_and_counted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    llama = FakeLlama(tokens=["one ", "two ", "three"])
    model, _engine = _local_model(llama, monkeypatch)
    reply = model.invoke(PROMPT)
    assert reply.content == "one two three"
    assert reply.usage_metadata == {"input_tokens": 10, "output_tokens": 3, "total_tokens": 13}
    assert reply.response_metadata["finish_reason"] == "stop"
    assert llama.closed


@pytest.mark.parametrize("flavour", ["invoke", "stream"])
def test_a_tool_call_from_llama_cpp_s_deltas_keeps_its_name(
    flavour: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    arguments = ['{"steps": ', '["buy flour", ', '"bake"]}']
    llama = FakeLlama(tokens=arguments, tool="submit_plan")
    model, _engine = _local_model(llama, monkeypatch)
    bound = model.bind_tools([TOOL], tool_choice="submit_plan")
    if flavour == "invoke":
        reply: Any = bound.invoke(PROMPT)
    else:
        reply = AIMessageChunk(content="")
        for chunk in bound.stream(PROMPT):
            reply += chunk
    [call] = reply.tool_calls
    assert call["name"] == "submit_plan"  # not once per delta: submit_plansubmit_plan...
    assert call["args"] == json.loads("".join(arguments))
    assert call["id"] == "call_0"
    assert reply.content == ""
