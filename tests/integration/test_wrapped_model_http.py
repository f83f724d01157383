"""A ``ChatOpenAI`` wrapped by ``.with_fallbacks()``, ``.bind()`` or ``AdaptiveBackpressure``,
against the simulator on loopback, takes the structured-output ladder's steps as the bare model
does: tools and JSON modes reach the provider through the wrapper."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from langchain_openai import ChatOpenAI
from pydantic import SecretStr

from multiagent.graphs.meeting import build_meeting_graph
from multiagent.models.adaptive import AdaptiveBackpressure
from multiagent.models.pipeline import ModelPipeline
from multiagent.models.structured import STRUCTURED_COUNTS, reset_structured_state
from multiagent.nodes.context import build_context
from multiagent.policies import load_settings
from multiagent.sim import run_sim_server


@pytest.fixture(autouse=True)
def fresh_ladder() -> Iterator[None]:
    reset_structured_state()
    yield
    reset_structured_state()


WRAPS: dict[str, Callable[[ChatOpenAI], Any]] = {
    "bare": lambda model: model,
    "with_fallbacks": lambda model: model.with_fallbacks([model.model_copy()]),
    "bind": lambda model: model.bind(temperature=0),
    "adaptive": AdaptiveBackpressure,
}


@pytest.mark.parametrize("wrap", list(WRAPS))
def test_a_wrapped_openai_model_answers_structured_steps_as_the_bare_one(wrap: str) -> None:
    settings = load_settings(overrides={"cache.completion_enabled": False})
    with run_sim_server() as url:
        bare = ChatOpenAI(model="gpt-4o-mini", base_url=url, api_key=SecretStr("sk-test"))
        pipeline = ModelPipeline(settings, model=WRAPS[wrap](bare))
        context = build_context(settings, pipeline=pipeline, analysis_cache=None)
        met = (
            build_meeting_graph()
            .compile()
            .invoke(
                {"topic": "Pricing", "participants": ["researcher", "critic"], "rounds": 2},
                context=context,
            )
        )
    assert met["consensus"] is True, STRUCTURED_COUNTS.snapshot()["moderate"]
    assert len(met["transcript"]) == 2
    # the moderator's structured answer came at the ladder's first step: a tool call
    assert STRUCTURED_COUNTS.snapshot()["moderate"]["steps"] == {"tool_call": 1}
    assert {call.model for call in context.ledger.calls} == {"gpt-4o-mini"}
