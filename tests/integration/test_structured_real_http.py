"""The ladder through the pipeline and the real ChatOpenAI client, against a server on loopback
that behaves as llama.cpp's does: no tool call, a 500 for ``json_schema``, schema-valid JSON for
``json_object``. The working method is learned once per model and reused."""

from __future__ import annotations

import json
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from typing import Any

import pytest
from langchain_core.messages import HumanMessage
from pydantic import BaseModel

from multiagent.models.ledger import RunLedger
from multiagent.models.pipeline import ModelPipeline
from multiagent.models.retry import RetryPolicy
from multiagent.models.structured import (
    STRUCTURED_COUNTS,
    refused_steps,
    reset_structured_state,
    run_structured,
)
from multiagent.policies import load_settings
from tests._loopback_http import JsonHandler, serving


class Verdict(BaseModel):
    passed: bool
    confidence: float


class LlamaLikeServer(ThreadingHTTPServer):
    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.requests: list[str] = []  # the kind of each request, in order


class _Handler(JsonHandler):
    server: LlamaLikeServer

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        fmt = (body.get("response_format") or {}).get("type")
        kind = "tools" if body.get("tools") else (fmt or "text")
        self.server.requests.append(kind)
        if fmt == "json_schema":
            self.reply_json(500, {"error": {"message": "unsupported response_format"}})
            return
        content = "I would say it passes."  # a small model ignoring the forced tool and prose
        if fmt == "json_object" and "schema" in body["response_format"]:
            content = json.dumps({"passed": True, "confidence": 0.8})
        self.reply_json(
            200,
            {
                "id": "x",
                "object": "chat.completion",
                "created": 0,
                "model": body["model"],
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": content},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 20, "completion_tokens": 7, "total_tokens": 27},
            },
        )

    def _send(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[LlamaLikeServer]:
    reset_structured_state()
    srv = LlamaLikeServer()
    monkeypatch.setenv("OPENAI_API_KEY", "local-key")
    try:
        with serving(srv) as url:
            monkeypatch.setenv("OPENAI_BASE_URL", f"{url}/v1")
            yield srv
    finally:
        reset_structured_state()


def test_a_server_error_on_json_schema_falls_to_json_mode_which_is_then_remembered(
    server: LlamaLikeServer,
) -> None:
    settings = load_settings(provider="openai", overrides={"cache.completion_enabled": False})
    pipeline = ModelPipeline(settings, retry=RetryPolicy(attempts=1))
    ledger = RunLedger()
    model = pipeline.model_for("standard", agent="checker", ledger=ledger)
    prompt = [HumanMessage("Does the text pass?")]

    first = run_structured(model, prompt, Verdict, node="validate")
    assert (first.step, first.result, first.calls) == ("json_mode", "fallback", 3)
    assert first.value == Verdict(passed=True, confidence=0.8)
    assert server.requests == ["tools", "json_schema", "json_object"]
    assert refused_steps(model) == {"json_schema"}

    second = run_structured(model, prompt, Verdict, node="validate")
    assert (second.step, second.calls) == ("json_mode", 2)
    assert server.requests[3:] == ["tools", "json_object"]  # json_schema is not asked again

    # one record per model call, the refused one included, with the server's token counts
    assert [c.outcome for c in ledger.calls] == ["ok", "error", "ok", "ok", "ok"]
    assert [c.input_tokens for c in ledger.calls if c.outcome == "ok"] == [20] * 4
    counts = STRUCTURED_COUNTS.snapshot()["validate"]
    assert (counts["fallback"], counts["steps"]) == (2, {"json_mode": 2})


def test_json_schema_refused_with_a_500_is_asked_once_not_retried(
    server: LlamaLikeServer,
) -> None:
    """With the pipeline's own retries on, the 500 that refuses ``json_schema`` is taken as the
    refusal it is: one request, then JSON mode (retried, it cost each process ~2.5 s)."""
    settings = load_settings(provider="openai", overrides={"cache.completion_enabled": False})
    retries = RetryPolicy(attempts=4, base_s=0.001, cap_s=0.002)
    model = ModelPipeline(settings, retry=retries).model_for("standard", agent="checker")
    first = run_structured(model, [HumanMessage("Does the text pass?")], Verdict)
    assert first.step == "json_mode"
    assert server.requests == ["tools", "json_schema", "json_object"]


def test_a_json_mode_known_to_work_is_retried_on_a_server_error(
    server: LlamaLikeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once JSON mode has worked for the model, a 500 to it is the provider failing: retried."""
    settings = load_settings(provider="openai", overrides={"cache.completion_enabled": False})
    retries = RetryPolicy(attempts=4, base_s=0.001, cap_s=0.002)
    model = ModelPipeline(settings, retry=retries).model_for("standard", agent="checker")
    prompt = [HumanMessage("Does the text pass?")]
    run_structured(model, prompt, Verdict)  # learns json_mode
    failing = iter([True])
    original = _Handler.reply_json

    def flaky(handler: _Handler, status: int, payload: dict[str, Any]) -> None:
        kind = handler.server.requests[-1]
        if kind == "json_object" and next(failing, False):
            original(handler, 503, {"error": {"message": "overloaded"}})
            return
        original(handler, status, payload)

    monkeypatch.setattr(_Handler, "reply_json", flaky)
    del server.requests[:]
    second = run_structured(model, prompt, Verdict)
    assert second.step == "json_mode"
    assert server.requests == ["tools", "json_object", "json_object"]  # the 503 was retried
