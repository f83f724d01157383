"""Each workflow runs in-process from its minimal input, as LangGraph Server starts it."""

from __future__ import annotations

import re
from typing import Any

import pytest
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.store.memory import InMemoryStore

from multiagent.errors import UsageError
from multiagent.graphs.meeting import build_meeting_graph
from multiagent.graphs.orchestration import build_orchestration_graph
from multiagent.graphs.validation import build_validation_graph
from multiagent.nodes.agents import DEFAULT_PARTICIPANTS, DEFAULT_TEAM
from multiagent.persistence.store_memory import agent_namespace
from multiagent.policies import load_settings


def test_orchestration_from_a_task_alone() -> None:
    state = build_orchestration_graph().compile().invoke({"task": "Plan a garden"})
    assert state["team"] == list(DEFAULT_TEAM)
    assert state["output"].strip()
    assert "approval" not in state  # no approval unless asked for


def test_meeting_from_a_topic_alone_remembers_in_the_store() -> None:
    store = InMemoryStore()
    graph = build_meeting_graph().compile(store=store)
    state = graph.invoke({"topic": "A four-day week"}, context={})
    assert state["participants"] == list(DEFAULT_PARTICIPANTS)
    assert state["rounds"] == 2
    assert state["summary"].strip()
    for name in DEFAULT_PARTICIPANTS:
        spoke = sum(1 for u in state["transcript"] if u["agent"] == name)
        assert len(store.search(agent_namespace(name), limit=20)) == spoke


def test_validation_from_items_alone_plain_texts_too() -> None:
    graph = build_validation_graph().compile()
    state = graph.invoke(
        {"items": ["The sun is a star.", {"id": "b", "text": "Paris is in France."}]},  # type: ignore[list-item]
        context={"profile": "dev_cost", "memory": "off"},
    )
    results = {r["id"]: r for r in state["results"]}
    assert set(results) == {"1", "b"}
    # dev_cost allows at most two validators: the default takes them all
    assert {r["validators"] for r in results.values()} == {2}
    profile = load_settings(env="dev_cost").profile
    assert {r["threshold"] for r in results.values()} == {profile.validation.consensus_threshold}


_BUILDERS = {
    "orchestration": build_orchestration_graph,
    "meeting": build_meeting_graph,
    "validation": build_validation_graph,
}


@pytest.mark.parametrize(
    ("workflow", "given", "named"),
    [
        ("orchestration", {}, "'task'"),
        ("orchestration", {"task": "  "}, "'task'"),
        ("orchestration", {"task": 123}, "'task'"),
        ("orchestration", {"task": "a\x1b[31mred"}, "U+001B"),
        ("orchestration", {"task": "x", "team": "researcher"}, "'team'"),
        ("orchestration", {"task": "x", "team": ["nobody"]}, "'nobody'"),
        ("orchestration", {"task": "x", "team": ["critic", "critic"]}, "twice"),
        ("orchestration", {"task": "x", "planner_picks": "no"}, "'planner_picks'"),
        ("orchestration", {"task": "x", "require_approval": "yes"}, "'require_approval'"),
        ("meeting", {}, "'topic'"),
        ("meeting", {"topic": "x", "rounds": 0}, "'rounds'"),
        ("meeting", {"topic": "x", "rounds": -1}, "'rounds'"),
        ("meeting", {"topic": "x", "rounds": 1000}, "'rounds'"),
        ("meeting", {"topic": "x", "rounds": "two"}, "'rounds'"),
        ("meeting", {"topic": "x", "participants": ["ghost"]}, "'ghost'"),
        ("validation", {}, "'items'"),
        ("validation", {"items": []}, "'items'"),
        ("validation", {"items": "just text"}, "'items'"),
        ("validation", {"items": [123]}, "item 1"),
        ("validation", {"items": [{"text": "no id"}]}, "'id'"),
        ("validation", {"items": [{"id": "a"}]}, "items[0].text"),
        ("validation", {"items": [{"id": "a", "text": ""}]}, "items[0].text"),
        ("validation", {"items": [{"id": "a", "text": "x"}, {"id": "a", "text": "y"}]}, "twice"),
        ("validation", {"items": ["x"], "threshold": 2}, "'threshold'"),
        ("validation", {"items": ["x"], "threshold": "nan"}, "'threshold'"),
        ("validation", {"items": ["x"], "validators": ["ghost"]}, "'ghost'"),
        (
            "validation",
            {"items": ["x"], "validators": ["factual_accuracy"], "threshold": 1.5},
            "'threshold'",
        ),
    ],
)
def test_a_bad_input_fails_naming_its_key_before_any_model_call(
    workflow: str, given: dict[str, Any], named: str
) -> None:
    """JSON input (LangGraph Server, Studio, a plain dict) is checked by the graph's first node."""
    graph = _BUILDERS[workflow]().compile(checkpointer=InMemorySaver())
    config: Any = {"configurable": {"thread_id": "bad-input"}}
    with pytest.raises(UsageError, match=re.escape(named)) as caught:
        graph.invoke(given, config, context={"memory": "off"})
    assert "\n" not in str(caught.value)
    assert not graph.get_state(config).values.get("usage")  # no model was called or paid
