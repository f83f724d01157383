"""``ChatOpenAI`` posting LangChain's payload as it is (``_openai_direct``), against the simulator.

The SDK's own ``chat.completions.create`` is made to fail when these tests use it for a whole
answer: a model that still went through it (through its parameter transform) fails them. Where a
test says the answer goes over the direct line (a urllib3 pool), the SDK's own ``post`` fails
too: a model that went back to the SDK's request path fails it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from langchain_core.messages import HumanMessage, SystemMessage
from langchain_openai import ChatOpenAI
from openai.resources.chat.completions import completions as sdk_completions

from multiagent.models._openai_direct import (
    AsyncDirectCompletions,
    DirectCompletions,
    DirectLine,
)
from multiagent.models.factory import build_chat_model
from multiagent.policies import load_settings
from multiagent.sim import SimServerConfig
from tests.integration._openai_sim import openai_sim

PROMPT = [SystemMessage("You review claims."), HumanMessage("Claim: rye bakes at 200 C.")]


@pytest.fixture
def sim_url(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    with openai_sim(monkeypatch, SimServerConfig(rpm=6000, tpm=10_000_000)) as url:
        yield url


def _no_transform(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the SDK's parameter transform ran")

    monkeypatch.setattr(sdk_completions, "maybe_transform", refuse)


def _no_sdk_post(monkeypatch: pytest.MonkeyPatch) -> None:
    """The SDK's request path refuses a whole answer: only the direct line can send it."""

    def refuse(self: Any, path: str, *args: Any, **kwargs: Any) -> Any:
        if path.endswith("/chat/completions") and not kwargs.get("stream"):
            raise AssertionError("a whole answer went through the SDK's request path")
        return original(self, path, *args, **kwargs)

    original = openai.OpenAI.post
    monkeypatch.setattr(openai.OpenAI, "post", refuse)


def _model(**fields: Any) -> ChatOpenAI:
    model = build_chat_model("standard", load_settings(provider="openai"))
    assert isinstance(model, ChatOpenAI)
    return model.model_copy(update=fields) if fields else model


def test_a_whole_answer_is_posted_without_the_sdk_transform_and_reads_the_same(
    sim_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    plain = ChatOpenAI(model=_model().model_name, api_key="sim-key", base_url=sim_url)  # type: ignore[arg-type]
    expected = plain.invoke(PROMPT)  # through the SDK's create (the simulator is deterministic)
    model = _model(include_response_headers=True)
    assert isinstance(model.client, DirectCompletions)
    assert isinstance(model.client.line, DirectLine)  # a plain key, no proxy: the direct line
    assert isinstance(model.async_client, AsyncDirectCompletions)
    _no_transform(monkeypatch)
    _no_sdk_post(monkeypatch)

    reply = model.invoke(PROMPT)
    assert reply.text == expected.text
    assert reply.usage_metadata is not None
    assert expected.usage_metadata is not None
    assert reply.usage_metadata["input_tokens"] == expected.usage_metadata["input_tokens"]
    assert reply.usage_metadata["output_tokens"] == expected.usage_metadata["output_tokens"]
    headers = reply.response_metadata["headers"]  # the limits the controller learns from
    assert headers["x-ratelimit-limit-requests"] == "6000"

    monkeypatch.undo()  # the async twin posts through the SDK's client
    again = asyncio.run(model.ainvoke(PROMPT))
    assert again.text == expected.text


def test_extra_body_reaches_the_server_and_tools_are_sent(
    sim_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _no_transform(monkeypatch)
    _no_sdk_post(monkeypatch)
    bounded = _model(extra_body={"max_tokens": 3}).invoke(PROMPT)
    assert bounded.usage_metadata is not None
    assert bounded.usage_metadata["output_tokens"] <= 3  # the bound rode in the body

    tool = {
        "type": "function",
        "function": {
            "name": "verdict",
            "parameters": {
                "type": "object",
                "properties": {"passed": {"type": "boolean"}},
                "required": ["passed"],
            },
        },
    }
    called = _model().bind_tools([tool], tool_choice="verdict").invoke(PROMPT)
    (call,) = called.tool_calls
    assert call["name"] == "verdict"
    assert isinstance(call["args"]["passed"], bool)


def test_a_429_is_the_sdks_rate_limit_error_with_its_headers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with openai_sim(monkeypatch, SimServerConfig(rpm=60, burst_s=1.0)):
        _no_transform(monkeypatch)
        _no_sdk_post(monkeypatch)
        model = _model()
        model.invoke(PROMPT)  # the bucket holds one request
        with pytest.raises(openai.RateLimitError) as raised:
            model.invoke(PROMPT)
    error = raised.value
    assert error.status_code == 429
    assert float(error.response.headers["retry-after"]) > 0
    assert error.message.startswith("Error code: 429 - ")  # the SDK's message, the server's text
    assert isinstance(error.body, dict)
    assert error.body["code"] == "rate_limit_exceeded"


def test_failures_without_an_answer_are_the_sdks_connection_and_timeout_errors(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _no_sdk_post(monkeypatch)
    monkeypatch.setenv("OPENAI_API_KEY", "sim-key")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")  # nothing listens there
    with pytest.raises(openai.APIConnectionError) as refused:
        _model().invoke(PROMPT)
    assert not isinstance(refused.value, openai.APITimeoutError)

    slow = SimServerConfig(rpm=6000, tpm=10_000_000, ttft_s=5.0)
    with openai_sim(monkeypatch, slow):
        monkeypatch.setenv("MULTIAGENT_RATE_LIMIT__REQUEST_TIMEOUT_S", "0.3")
        with pytest.raises(openai.APITimeoutError):
            _model().invoke(PROMPT)


def test_a_proxy_or_per_request_options_keep_the_sdks_request_path(
    sim_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    plain = _model()
    assert isinstance(plain.client, DirectCompletions)
    assert plain.client.line is not None
    # per-request headers are the SDK's to merge: the answer goes its way, and still arrives
    sent: list[str] = []
    original = openai.OpenAI.post

    def counting(self: Any, path: str, *args: Any, **kwargs: Any) -> Any:
        sent.append(path)
        return original(self, path, *args, **kwargs)

    monkeypatch.setattr(openai.OpenAI, "post", counting)
    reply = plain.invoke(PROMPT, extra_headers={"x-trace": "1"})
    assert reply.text
    assert sent == ["/chat/completions"]

    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("NO_PROXY", "")
    proxied = _model()
    assert isinstance(proxied.client, DirectCompletions)
    assert proxied.client.line is None  # the SDK's client routes through the proxy


def test_streams_still_go_through_the_sdk(sim_url: str) -> None:
    model = _model(streaming=True)
    chunks = list(model.stream(PROMPT))
    assert "".join(chunk.text for chunk in chunks) == _model().invoke(PROMPT).text
