"""Each workflow runs in-process from its minimal input, as LangGraph Server starts it."""

from __future__ import annotations

from langgraph.store.memory import InMemoryStore

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
