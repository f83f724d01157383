"""The simulator as OpenAI's own clients use it: what they send, it answers as OpenAI does.

Real ``openai`` SDK and ``langchain-openai`` clients against the server on 127.0.0.1; each case
is one a client tripped on (a 400 for ``n``, a 404 for ``models.retrieve``, usage over
``max_tokens``, a structured answer never cut, ``logprobs`` always null, a plain-text 500 at
shutdown).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from langchain_core.messages import HumanMessage
from langchain_openai import ChatOpenAI
from pydantic import BaseModel

from multiagent.sim.config import SimServerConfig
from multiagent.sim.runner import run_sim_server

MESSAGES: list[Any] = [{"role": "user", "content": "Summarise the incident review."}]
TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "lookup",
        "description": "Find an account.",
        "parameters": {
            "type": "object",
            "properties": {"account": {"type": "string"}, "region": {"enum": ["eu", "us"]}},
            "required": ["account", "region"],
        },
    },
}


class Person(BaseModel):
    name: str
    age: int


@pytest.fixture(scope="module")
def sim_url() -> Iterator[str]:
    """A simulator with limits far above what these tests send."""
    with run_sim_server(SimServerConfig(rpm=1e6, tpm=1e9)) as url:
        yield url


def _client(url: str) -> openai.OpenAI:
    return openai.OpenAI(api_key="sim", base_url=url, max_retries=0)


# -- n choices -------------------------------------------------------------------------------


def test_n_choices_are_distinct_and_the_first_is_the_single_answer(sim_url: str) -> None:
    # n was refused with a 400 ("n: Input should be less than or equal to 1")
    client = _client(sim_url)
    single = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    three = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, n=3)
    assert [choice.index for choice in three.choices] == [0, 1, 2]
    texts = [choice.message.content for choice in three.choices]
    assert texts[0] == single.choices[0].message.content
    assert len(set(texts)) == 3
    again = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, n=3)
    assert [choice.message.content for choice in again.choices] == texts
    assert three.usage is not None
    assert single.usage is not None
    # the prompt counts once; every choice's output counts
    assert three.usage.prompt_tokens == single.usage.prompt_tokens
    assert three.usage.completion_tokens > 2 * single.usage.completion_tokens
    assert three.usage.total_tokens == three.usage.prompt_tokens + three.usage.completion_tokens


def test_n_choices_stream_by_index_and_join_to_the_plain_reply(sim_url: str) -> None:
    client = _client(sim_url)
    plain = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, n=2)
    joined: dict[int, str] = {}
    finishes: dict[int, str | None] = {}
    chunks = list(
        client.chat.completions.create(
            model="gpt-4o-mini",
            messages=MESSAGES,
            n=2,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    for chunk in chunks:
        for choice in chunk.choices:
            joined[choice.index] = joined.get(choice.index, "") + (choice.delta.content or "")
            finishes[choice.index] = choice.finish_reason or finishes.get(choice.index)
    assert joined == {c.index: c.message.content for c in plain.choices}
    assert finishes == {0: "stop", 1: "stop"}
    assert chunks[-1].choices == []
    assert chunks[-1].usage == plain.usage


def test_langchain_generates_n_generations(sim_url: str) -> None:
    model = ChatOpenAI(model="gpt-4o-mini", api_key="sim", base_url=sim_url, max_retries=0, n=2)
    result = model.generate([[HumanMessage("Summarise the incident review.")]])
    texts = [generation.text for generation in result.generations[0]]
    assert len(texts) == 2
    assert texts[0] != texts[1]


# -- models ----------------------------------------------------------------------------------


def test_a_listed_model_is_retrieved_and_an_unknown_one_is_model_not_found(sim_url: str) -> None:
    # GET /v1/models/{id} answered 404 "Invalid URL" for every model, listed or not
    client = _client(sim_url)
    listed = [model.id for model in client.models.list()]
    assert [client.models.retrieve(name).id for name in listed] == listed
    with pytest.raises(openai.NotFoundError) as caught:
        client.models.retrieve("no-such-model")
    assert caught.value.code == "model_not_found"
    assert caught.value.body == {
        "message": "The model `no-such-model` does not exist or you do not have access to it.",
        "type": "invalid_request_error",
        "param": None,
        "code": "model_not_found",
    }


def test_a_chat_with_an_unknown_model_is_not_found_and_takes_no_capacity() -> None:
    # any model name was served, and took from the limits as a listed one does
    with run_sim_server(SimServerConfig(rpm=60)) as url:  # one request in the bucket
        client = _client(url)
        for stream in (False, True):
            with pytest.raises(openai.NotFoundError) as caught:
                client.chat.completions.create(model="gpt-5", messages=MESSAGES, stream=stream)
            assert caught.value.body == {
                "message": "The model `gpt-5` does not exist or you do not have access to it.",
                "type": "invalid_request_error",
                "param": None,
                "code": "model_not_found",
            }
        reply = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        assert reply.model == "gpt-4o-mini"


def test_the_builtin_profiles_call_only_models_the_simulator_lists() -> None:
    # the openai provider pointed at ``sim serve`` sends the profile's tier models
    from multiagent.policies.profiles import BUILTIN_PROFILES, DEFAULT_PRICES

    tiers = {
        name
        for profile in BUILTIN_PROFILES.values()
        for name in (profile.models.fast, profile.models.standard, profile.models.premium)
    }
    assert tiers | set(DEFAULT_PRICES) <= set(SimServerConfig().models)


# -- max_tokens ------------------------------------------------------------------------------


@pytest.mark.parametrize("cap", ["max_tokens", "max_completion_tokens"])
@pytest.mark.parametrize("limit", [1, 2])
def test_output_never_counts_more_than_its_cap(sim_url: str, cap: str, limit: int) -> None:
    # a first word longer than the cap was sent whole: "Regarding" as 3 tokens for max_tokens=2
    client = _client(sim_url)
    reply = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, **{cap: limit})
    assert reply.usage is not None
    assert reply.usage.completion_tokens <= limit
    assert reply.choices[0].finish_reason == "length"
    assert reply.choices[0].message.content
    chunks = list(
        client.chat.completions.create(
            model="gpt-4o-mini",
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
            **{cap: limit},
        )
    )
    usage = chunks[-1].usage
    assert usage is not None
    assert usage.completion_tokens <= limit
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == reply.choices[0].message.content


def test_a_structured_answer_over_its_cap_is_cut_with_length(sim_url: str) -> None:
    # a json_schema answer, a tool call and a JSON-mode answer came whole with "stop" however
    # small max_tokens was; OpenAI cuts them, and its SDK refuses to parse the cut JSON
    client = _client(sim_url)
    with pytest.raises(openai.LengthFinishReasonError):
        client.chat.completions.parse(
            model="gpt-4o-mini", messages=MESSAGES, response_format=Person, max_tokens=3
        )
    whole = client.chat.completions.parse(
        model="gpt-4o-mini", messages=MESSAGES, response_format=Person
    )
    assert whole.choices[0].finish_reason == "stop"
    assert isinstance(whole.choices[0].message.parsed, Person)
    for extra in (
        {"tools": [TOOL], "tool_choice": "required"},
        {"response_format": {"type": "json_object"}},
    ):
        reply = client.chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES, max_tokens=3, **extra
        )
        assert reply.choices[0].finish_reason == "length", extra
        assert reply.usage is not None
        assert reply.usage.completion_tokens <= 3
    model = ChatOpenAI(
        model="gpt-4o-mini", api_key="sim", base_url=sim_url, max_retries=0, max_tokens=3
    )
    with pytest.raises(openai.LengthFinishReasonError):
        model.with_structured_output(Person, method="json_schema").invoke("Describe Ada.")


# -- headers ---------------------------------------------------------------------------------


def test_every_answer_carries_a_request_id_the_sdk_reads(sim_url: str) -> None:
    # the SDK's _request_id and its errors' request_id were None: no x-request-id was sent
    client = _client(sim_url)
    reply = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert re.fullmatch(r"req_[0-9a-f]{32}", reply._request_id or "")
    again = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert again._request_id != reply._request_id
    with pytest.raises(openai.NotFoundError) as caught:
        client.models.retrieve("no-such-model")
    assert re.fullmatch(r"req_[0-9a-f]{32}", caught.value.request_id or "")
    # one the client sent is echoed, so both sides log the same id
    echoed = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=MESSAGES, extra_headers={"x-request-id": "mine-1"}
    )
    assert echoed.headers["x-request-id"] == "mine-1"
    chunks = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)
    assert re.fullmatch(r"req_[0-9a-f]{32}", chunks.response.headers["x-request-id"])
    chunks.close()


# -- logprobs --------------------------------------------------------------------------------


def test_logprobs_are_given_per_token_alike_in_a_reply_and_its_stream(sim_url: str) -> None:
    # logprobs: true was answered with "logprobs": null; reading .content failed
    client = _client(sim_url)
    asked: dict[str, Any] = {"logprobs": True, "top_logprobs": 3}
    reply = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, **asked)
    choice = reply.choices[0]
    assert choice.logprobs is not None
    tokens = choice.logprobs.content
    assert tokens is not None
    assert "".join(token.token for token in tokens) == choice.message.content
    assert all(token.logprob <= 0 for token in tokens)
    assert all(len(token.top_logprobs) == 3 for token in tokens)
    assert all(token.top_logprobs[0].token == token.token for token in tokens)
    streamed = []
    for chunk in client.chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=True, **asked
    ):
        if chunk.choices and chunk.choices[0].logprobs is not None:
            streamed += chunk.choices[0].logprobs.content or []
    assert streamed == tokens
    plain = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert plain.choices[0].logprobs is None
    model = ChatOpenAI(
        model="gpt-4o-mini", api_key="sim", base_url=sim_url, max_retries=0, logprobs=True
    )
    message = model.invoke("Summarise the incident review.")
    assert message.response_metadata["logprobs"]["content"]


# -- bad requests ----------------------------------------------------------------------------


def test_top_logprobs_without_logprobs_is_400(sim_url: str) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        _client(sim_url).chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES, top_logprobs=2
        )
    assert caught.value.param == "top_logprobs"


def test_stream_options_without_stream_is_400(sim_url: str) -> None:
    # OpenAI refuses it; the simulator served it, so a client sending it passed a load test
    with pytest.raises(openai.BadRequestError) as caught:
        _client(sim_url).chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES, stream_options={"include_usage": True}
        )
    assert caught.value.param == "stream_options"
    assert caught.value.type == "invalid_request_error"


@pytest.mark.parametrize(
    ("extra", "said"),
    [
        ({"tool_choice": "required"}, "only allowed when 'tools' are given"),
        (
            {"tools": [TOOL], "tool_choice": {"type": "function", "function": {"name": "nope"}}},
            "no function named 'nope' in 'tools' (given: lookup)",
        ),
        ({"tools": [TOOL], "tool_choice": {"type": "function"}}, "name the function"),
    ],
)
def test_a_tool_choice_the_tools_cannot_meet_is_400(
    sim_url: str, extra: dict[str, Any], said: str
) -> None:
    # the simulator called the first tool, or answered in text, where OpenAI refuses
    with pytest.raises(openai.BadRequestError) as caught:
        _client(sim_url).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, **extra)
    assert caught.value.param == "tool_choice"
    assert said in caught.value.message


def test_a_request_over_a_minute_of_tokens_names_the_limit_in_full() -> None:
    with (
        run_sim_server(SimServerConfig(tpm=1e6)) as url,
        pytest.raises(openai.RateLimitError) as caught,
    ):
        _client(url).chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES, max_tokens=2_000_000
        )
    # it said "Limit 1e+06"
    assert re.search(r"\(TPM\): Limit 1000000, Requested 20000\d\d\.", caught.value.message)
