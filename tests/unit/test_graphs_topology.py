"""Graph topology, checked against stored mermaid snapshots; and the LangGraph Studio entry."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pytest
from langgraph.graph import StateGraph
from langgraph.graph.state import CompiledStateGraph

from multiagent.graphs.meeting import build_meeting_graph
from multiagent.graphs.orchestration import build_orchestration_graph
from multiagent.graphs.validation import build_validation_graph

ROOT = Path(__file__).resolve().parents[2]
SNAPSHOTS = ROOT / "tests" / "snapshots"
FACTORIES = {
    "orchestration": build_orchestration_graph,
    "meeting": build_meeting_graph,
    "validation": build_validation_graph,
}


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_topology_matches_snapshot(name: str) -> None:
    builder = FACTORIES[name]()
    assert isinstance(builder, StateGraph)  # factories return the uncompiled builder
    mermaid = builder.compile().get_graph().draw_mermaid()
    path = SNAPSHOTS / f"{name}.mmd"
    if os.environ.get("UPDATE_SNAPSHOTS") == "1":  # pragma: no cover - maintainer's switch
        path.write_text(mermaid, encoding="utf-8")
    assert mermaid == path.read_text(encoding="utf-8"), (
        f"{name} topology changed; rerun with UPDATE_SNAPSHOTS=1 if that is intended"
    )


def test_orchestration_routes_are_declared() -> None:
    edges = {
        (e.source, e.target, e.conditional)
        for e in build_orchestration_graph().compile().get_graph().edges
    }
    assert ("plan", "review", True) in edges
    assert ("plan", "work", True) in edges
    assert ("review", "work", True) in edges
    assert ("review", "__end__", True) in edges
    assert ("work", "synthesize", False) in edges


def test_validation_aggregator_is_deferred() -> None:
    builder = build_validation_graph()
    assert builder.nodes["aggregate"].defer is True
    assert builder.nodes["validate"].defer is False


def test_langgraph_json_points_at_compiled_graphs() -> None:
    config = json.loads((ROOT / "langgraph.json").read_text(encoding="utf-8"))
    assert set(config["graphs"]) == set(FACTORIES)
    for name, target in config["graphs"].items():
        file, attribute = target.split(":")
        spec = importlib.util.spec_from_file_location(f"_studio_{name}", ROOT / file)
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        graph = getattr(module, attribute)
        assert isinstance(graph, CompiledStateGraph)
        assert graph.get_graph().draw_mermaid() == (SNAPSHOTS / f"{name}.mmd").read_text(
            encoding="utf-8"
        )


def test_factories_do_not_compile_at_import() -> None:
    import multiagent.graphs.meeting as meeting
    import multiagent.graphs.orchestration as orchestration
    import multiagent.graphs.validation as validation

    for module in (orchestration, meeting, validation):
        compiled = [v for v in vars(module).values() if isinstance(v, CompiledStateGraph)]
        assert compiled == []


def test_a_studio_graph_runs_without_a_context() -> None:
    spec = importlib.util.spec_from_file_location("_studio", ROOT / "multiagent/graphs/studio.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    values = module.validation.invoke(
        {
            "items": [{"id": "a", "text": "Ovens are hot."}],
            "validators": ["safety"],
            "threshold": 0.5,
        }
    )
    assert [r["id"] for r in values["results"]] == ["a"]
    assert values["results"][0]["responded"] == 1
