"""Streams from a server on loopback that ends them as llama-cpp-python's does: with ``[DONE]`` and
no ``finish_reason`` when another request arrives, and a tool call's name in every delta.

A cut stream is a failure (retried while nothing was shown), never a short answer taken as
whole; a repeated tool-call name is kept once."""

from __future__ import annotations

import json
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from typing import Any

import pytest
from langchain_core.messages import AIMessageChunk, HumanMessage

from multiagent.models.ledger import RunLedger
from multiagent.models.openai_compat import StreamCutError
from multiagent.models.pipeline import ModelPipeline
from multiagent.models.retry import RetryPolicy
from multiagent.policies import load_settings
from tests._loopback_http import JsonHandler, serving

Delta = dict[str, Any]


class StreamingServer(ThreadingHTTPServer):
    """Answers each chat completion with the next scripted stream of deltas."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        #: each stream: the deltas, and the finish_reason of the last (None: cut short)
        self.scripts: list[tuple[list[Delta], str | None]] = []
        self.requests = 0


class _Handler(JsonHandler):
    server: StreamingServer

    def do_POST(self) -> None:
        body = json.loads(self.read_body())
        assert body.get("stream") is True
        deltas, finish = self.server.scripts[self.server.requests]
        self.server.requests += 1
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Connection", "close")
        self.end_headers()
        chunks = [(delta, None) for delta in deltas]
        if finish is not None:
            chunks.append(({}, finish))
        for delta, reason in chunks:
            choice = {"index": 0, "delta": delta, "finish_reason": reason}
            chunk = {"id": "c", "object": "chat.completion.chunk", "created": 0,
                     "model": body["model"], "choices": [choice]}  # fmt: skip
            self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
        self.wfile.write(b"data: [DONE]\n\n")


ROLE: Delta = {"role": "assistant", "content": None}


def text(*pieces: str) -> list[Delta]:
    return [ROLE, *({"content": piece} for piece in pieces)]


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[StreamingServer]:
    srv = StreamingServer()
    monkeypatch.setenv("OPENAI_API_KEY", "local-key")
    with serving(srv) as url:
        monkeypatch.setenv("OPENAI_BASE_URL", f"{url}/v1")
        yield srv


def streamed(server: StreamingServer, *, attempts: int, tools: list[Any] | None = None) -> Any:
    settings = load_settings(provider="openai", overrides={"cache.completion_enabled": False})
    pipeline = ModelPipeline(settings, retry=RetryPolicy(attempts=attempts, base_s=0.01))
    ledger = RunLedger()
    model: Any = pipeline.model_for("standard", agent="analyst", ledger=ledger)
    if tools:
        model = model.bind_tools(tools, tool_choice="submit")
    return model, ledger


def test_a_stream_cut_before_its_first_token_is_sent_again(server: StreamingServer) -> None:
    server.scripts = [(text(), None), (text("Hello", " there"), "stop")]
    model, ledger = streamed(server, attempts=2)

    chunks = list(model.stream([HumanMessage("hi")]))

    assert "".join(str(c.content) for c in chunks) == "Hello there"
    assert server.requests == 2
    [record] = ledger.calls
    assert (record.outcome, record.attempts) == ("ok", 2)


def test_a_stream_cut_after_some_text_fails_instead_of_passing_as_the_answer(
    server: StreamingServer,
) -> None:
    server.scripts = [(text("Hel"), None)]
    model, ledger = streamed(server, attempts=1)

    with pytest.raises(StreamCutError, match="no finish_reason"):
        list(model.stream([HumanMessage("hi")]))

    [record] = ledger.calls
    assert (record.outcome, record.error) == ("error", "connection")


def test_a_stream_with_no_chunk_at_all_names_the_context_window(server: StreamingServer) -> None:
    # llama-cpp-python's server ends the stream of a prompt over its window before any chunk
    server.scripts = [([], None)]
    model, ledger = streamed(server, attempts=1)

    with pytest.raises(StreamCutError, match="no part of an answer") as raised:
        list(model.stream([HumanMessage("hi")]))

    assert "models.context_window_tokens" in str(raised.value)
    assert "interrupt_requests" not in str(raised.value)
    [record] = ledger.calls
    assert (record.outcome, record.error) == ("error", "connection")


def test_a_tool_call_name_repeated_in_every_delta_is_named_once(server: StreamingServer) -> None:
    call = {"index": 0, "id": "call_1", "type": "function"}
    arguments = ['{"a', '": "', "x", '"}']
    deltas = [ROLE] + [
        {"content": None, "tool_calls": [{**call, "function": {"name": "submit", "arguments": a}}]}
        for a in arguments
    ]
    server.scripts = [(deltas, "tool_calls")]
    tool = {"type": "function", "function": {"name": "submit", "parameters": {
        "type": "object", "properties": {"a": {"type": "string"}}}}}  # fmt: skip
    model, ledger = streamed(server, attempts=1, tools=[tool])

    merged: AIMessageChunk | None = None
    for chunk in model.stream([HumanMessage("hi")]):
        merged = chunk if merged is None else merged + chunk

    assert merged is not None
    assert [(c["name"], c["args"]) for c in merged.tool_calls] == [("submit", {"a": "x"})]
    [record] = ledger.calls
    # estimated from what came: the name once and the arguments, not the name per delta
    assert record.estimated
    assert record.output_tokens < 10
