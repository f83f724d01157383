"""Bad requests to the simulator server on 127.0.0.1: OpenAI's 4xx error document, never a 500."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from multiagent.sim.config import SimServerConfig
from multiagent.sim.runner import run_sim_server

CASES = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
BASE: dict[str, Any] = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    """The simulator's root URL (limits far above what these tests send)."""
    with run_sim_server(SimServerConfig(rpm=1e6, tpm=1e12)) as url:
        yield url.removesuffix("/v1")


def _refused(response: httpx2.Response) -> str:
    """The contract: a 4xx with OpenAI's error document; returns its message."""
    assert 400 <= response.status_code < 500, (response.status_code, response.text)
    assert "Traceback" not in response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"
    assert "\n" not in error["message"]
    return str(error["message"])


@pytest.mark.parametrize(
    "extra",
    [
        {"tools": [{}]},
        {"tools": [{"type": "function"}]},
        {"tools": [{"type": "function", "function": {}}]},
        {"tools": [{"type": "function", "function": {"name": "f", "parameters": "str"}}]},
        {
            "tools": [
                {
                    "type": "function",
                    "function": {"name": "f", "parameters": {"properties": {"a": "x"}}},
                }
            ]
        },
        {"response_format": {"type": "json_schema"}},
        {"response_format": {"type": "json_schema", "json_schema": {"schema": "x"}}},
        {"response_format": {"type": "xml"}},
    ],
    ids=lambda extra: json.dumps(extra)[:40],
)
def test_a_malformed_tool_or_format_is_400_naming_it(server: str, extra: dict[str, Any]) -> None:
    response = httpx2.post(f"{server}/v1/chat/completions", json={**BASE, **extra})
    assert response.status_code == 400, response.text
    message = _refused(response)
    assert next(iter(extra)) in message or "simulator cannot use it" in message


@CASES
@given(
    field=st.sampled_from(["tools", "response_format", "tool_choice", "messages"]),
    value=JSON_VALUES,
)
def test_any_json_in_a_structured_field_is_answered_never_500(
    server: str, field: str, value: Any
) -> None:
    response = httpx2.post(f"{server}/v1/chat/completions", json={**BASE, field: value})
    assert response.status_code != 500, response.text
    if response.status_code != 200:
        _refused(response)


@CASES
@given(body=st.binary(max_size=60))
def test_a_body_that_is_not_a_json_object_is_400(server: str, body: bytes) -> None:
    try:
        document = json.loads(body)
    except ValueError:
        document = None
    if isinstance(document, dict):
        return
    response = httpx2.post(
        f"{server}/v1/chat/completions", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 400, response.text
    _refused(response)


def test_the_openapi_document_says_400_as_the_server_answers(server: str) -> None:
    spec = httpx2.get(f"{server}/openapi.json").json()
    responses = spec["paths"]["/v1/chat/completions"]["post"]["responses"]
    assert "400" in responses
    assert "422" not in responses


def test_unknown_urls_and_methods_answer_openai_errors_and_healthz_answers_head(
    server: str,
) -> None:
    assert "Invalid URL" in _refused(httpx2.get(f"{server}/v1/nothing"))
    assert httpx2.post(f"{server}/healthz").status_code == 405
    _refused(httpx2.post(f"{server}/healthz"))
    assert httpx2.get(f"{server}/healthz").json() == {"status": "ok"}
    assert httpx2.head(f"{server}/healthz").status_code == 200


def test_an_unknown_model_is_404_model_not_found_and_counted_nowhere(server: str) -> None:
    # any model name was served, so a client with a misspelt model passed a load test
    before = httpx2.get(f"{server}/sim/stats").json()["totals"]
    for stream in (False, True):
        response = httpx2.post(
            f"{server}/v1/chat/completions", json={**BASE, "model": "gpt-4o-minj", "stream": stream}
        )
        assert response.status_code == 404
        assert response.json() == {
            "error": {
                "message": "The model `gpt-4o-minj` does not exist or you do not have access to "
                "it.",
                "type": "invalid_request_error",
                "param": None,
                "code": "model_not_found",
            }
        }
    assert httpx2.get(f"{server}/sim/stats").json()["totals"] == before
    assert httpx2.post(f"{server}/v1/chat/completions", json=BASE).status_code == 200
    spec = httpx2.get(f"{server}/openapi.json").json()
    assert "404" in spec["paths"]["/v1/chat/completions"]["post"]["responses"]
