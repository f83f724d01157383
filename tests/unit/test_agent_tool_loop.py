"""An agent with a tool calls it, gets the result back in its history, and answers from it."""

from __future__ import annotations

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolMessage

from multiagent.nodes.agents import AgentSpec
from multiagent.nodes.calling import AgentCall
from multiagent.nodes.context import build_context
from multiagent.nodes.tools import calculator
from multiagent.policies import load_settings
from multiagent.sim.model import build_simulated_model

ECONOMIST = AgentSpec(
    name="economist",
    role="You are the economist: work the numbers.",
    tier="fast",
    tools=("calculator",),
    memory=False,
)


def test_the_calculator_result_reaches_the_agent_and_shapes_its_answer() -> None:
    settings = load_settings(overrides={"cache.completion_enabled": False})
    context = build_context(settings, agents=None)
    call = AgentCall(context, ECONOMIST, node="agent")
    question: list[BaseMessage] = [
        SystemMessage(ECONOMIST.role),
        HumanMessage("What is (120 - 45) * 0.2?"),
    ]
    answer = call.text(question)

    # the same conversation, played by hand against the same simulated provider
    model = build_simulated_model(context.model_name(ECONOMIST), settings)
    asked = model.bind_tools([calculator], tool_choice="auto").invoke(question)
    assert isinstance(asked, AIMessage)
    (tool_call,) = asked.tool_calls
    assert tool_call["name"] == "calculator"
    result = calculator.invoke(tool_call["args"])
    history = [*question, asked, ToolMessage(content=str(result), tool_call_id=tool_call["id"])]
    expected = model.bind_tools([calculator], tool_choice="auto").invoke(history).text
    assert answer == expected
    assert answer  # a text answer, not an empty tool-call turn
    without_result = model.invoke(question).text
    assert answer != without_result
    assert len(context.ledger.calls) == 2  # the tool call, then the answer
