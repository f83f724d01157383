"""``AdaptiveBackpressure`` wraps a chat model as a chat model: tools and structured output
work through it, and every call still passes its controller."""

from __future__ import annotations

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage
from pydantic import BaseModel

from multiagent.models.adaptive import AdaptiveBackpressure
from multiagent.models.backpressure import BackpressureConfig, BackpressureController
from multiagent.models.pipeline import ModelPipeline
from multiagent.models.structured import reset_structured_state, run_structured
from multiagent.nodes.tools import calculator
from multiagent.policies import ModelPrice, load_settings
from multiagent.sim.model import SimulatedChatModel


class Plan(BaseModel):
    steps: list[str]


def limited() -> AdaptiveBackpressure:
    controller = BackpressureController(BackpressureConfig(max_concurrency=2, requests_per_s=1e6))
    return AdaptiveBackpressure(SimulatedChatModel(model="gpt-4o-mini"), controller=controller)


def test_bind_tools_goes_through_the_controller() -> None:
    wrapped = limited()
    assert isinstance(wrapped, BaseChatModel)
    reply = wrapped.bind_tools([calculator], tool_choice="calculator").invoke("What is 2*3?")
    assert isinstance(reply, AIMessage)
    assert [call["name"] for call in reply.tool_calls] == ["calculator"]
    assert wrapped.controller.state().samples == 1


def test_with_structured_output_goes_through_the_controller() -> None:
    wrapped = limited()
    answer = wrapped.with_structured_output(Plan).invoke("Plan the launch")
    assert isinstance(answer, Plan)
    raw = wrapped.with_structured_output(Plan, include_raw=True).invoke("Plan the launch")
    assert isinstance(raw["parsed"], Plan)
    assert wrapped.controller.state().samples == 2


def test_the_ladder_and_the_pipeline_take_the_wrapper_as_a_chat_model() -> None:
    reset_structured_state()
    wrapped = limited()
    outcome = run_structured(wrapped, ["Plan the launch"], Plan)  # type: ignore[list-item]
    assert (outcome.step, outcome.result) == ("tool_call", "first_try")
    settings = load_settings(overrides={"cache.completion_enabled": False})
    free = ModelPrice(input_per_mtok=0, output_per_mtok=0)
    pipeline = ModelPipeline(settings, model=wrapped, price=free)
    model = pipeline.model_for("standard", agent="writer")
    assert pipeline.model_name("fast") == "gpt-4o-mini"
    assert "".join(c.text for c in model.stream("Name one risk"))
    assert wrapped.controller.state().samples == 2
    reset_structured_state()
