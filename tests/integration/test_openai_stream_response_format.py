"""A stream asked for a ``response_format`` through the real ChatOpenAI client: the structured
ladder's JSON steps stream so under LangGraph's ``messages`` mode.

OpenAI's client cannot include response headers in such a stream (``langchain_openai`` warns and
streams without them), and the pipeline asks OpenAI models for their headers (they carry the
rate limits): the stream is asked of the provider model without them, with no warning (the suite
makes warnings errors: one surfaced as a failed planner in a streamed run against llama.cpp).
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from langchain_core.messages import HumanMessage

from multiagent.models.ledger import RunLedger
from multiagent.models.pipeline import ModelPipeline
from multiagent.policies import load_settings
from multiagent.sim import SimServerConfig
from tests.integration._openai_sim import openai_sim


@pytest.fixture
def sim_url(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    with openai_sim(monkeypatch, SimServerConfig(rpm=6000, tpm=10_000_000)) as url:
        yield url


def test_a_stream_with_a_response_format_warns_of_nothing_and_streams(sim_url: str) -> None:
    settings = load_settings(provider="openai", overrides={"cache.completion_enabled": False})
    ledger = RunLedger()
    model = ModelPipeline(settings).model_for("standard", agent="planner", ledger=ledger)
    assert model.provider_model.include_response_headers  # the rate limits' headers are asked
    chunks = list(
        model.stream(
            [HumanMessage('Answer as JSON: {"steps": [...]}')],
            response_format={"type": "json_object"},
        )
    )
    text = "".join(str(chunk.content) for chunk in chunks)
    assert isinstance(json.loads(text), dict)
    assert [call.outcome for call in ledger.calls] == ["ok"]
    assert model.provider_model.include_response_headers  # other calls still ask for them
