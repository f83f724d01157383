"""The completion cache keeps a structured answer only once it validates."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest
from langchain_core.language_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from pydantic import BaseModel, Field

from multiagent.models.ledger import RunLedger
from multiagent.models.pipeline import ModelPipeline
from multiagent.models.structured import reset_structured_state, run_structured
from multiagent.policies import ModelPrice, load_settings

FREE = ModelPrice(input_per_mtok=0.0, output_per_mtok=0.0)
PROMPT: list[BaseMessage] = [HumanMessage("Judge the text.")]
BAD = '{"verdict": "fine", "score": 7}'
GOOD = '{"verdict": "fine", "score": 0.7}'


class Answer(BaseModel):
    verdict: str = Field(min_length=1)
    score: float = Field(ge=0.0, le=1.0)


@pytest.fixture(autouse=True)
def fresh_ladder() -> Iterator[None]:
    reset_structured_state()
    yield
    reset_structured_state()


def pipeline_answering(*replies: str) -> ModelPipeline:
    model = GenericFakeChatModel(messages=itertools.cycle([AIMessage(r) for r in replies]))
    return ModelPipeline(load_settings(), model=model, price=FREE)


def ask(pipeline: ModelPipeline) -> list[str]:
    """One structured call; the outcomes of its model calls, in order."""
    ledger = RunLedger()
    model = pipeline.model_for("standard", agent="judge", ledger=ledger)
    assert run_structured(model, PROMPT, Answer, node="validate").value.score == 0.7
    return [record.outcome for record in ledger.calls]


def test_an_answer_that_failed_its_schema_is_not_kept() -> None:
    pipeline = pipeline_answering(BAD, GOOD)
    assert ask(pipeline) == ["ok", "ok"]  # the bad answer, then its repair
    cache = pipeline.completion_cache
    assert cache is not None
    assert cache.stats().entries == 1  # the repair's answer only
    # a re-run asks the model again where the answer failed, and takes the repair from the cache
    pipeline_again = pipeline_answering(GOOD)
    assert ask(pipeline_again) == ["ok"]
    assert cache.stats().entries == 2


def test_a_cached_answer_that_fails_its_schema_is_removed() -> None:
    pipeline = pipeline_answering(BAD, GOOD)
    ledger = RunLedger()
    model = pipeline.model_for("standard", agent="judge", ledger=ledger)
    # a plain call (no schema to judge it by) stores the bad answer
    model.invoke(run_structured_prompt(model))
    cache = pipeline.completion_cache
    assert cache is not None
    assert cache.stats().entries == 1
    # the structured call meets it in the cache, finds it invalid and removes it
    assert ask(pipeline) == ["cached", "ok"]
    assert ask(pipeline_answering(GOOD)) == ["ok"]  # asked again: the bad answer is gone


def run_structured_prompt(model: object) -> list[BaseMessage]:
    """The prompt the ladder's text step sends for ``PROMPT`` (a fake model has no tools)."""
    sent: list[list[BaseMessage]] = []

    def record(runnable: object, messages: list[BaseMessage]) -> AIMessage:
        sent.append(messages)
        return AIMessage(GOOD)

    run_structured(model, PROMPT, Answer, invoke=record)  # type: ignore[arg-type]
    return sent[0]
