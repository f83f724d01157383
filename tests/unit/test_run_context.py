"""The serialisable run context: its names, how it resolves, and what it caches per process."""

from __future__ import annotations

import typing
from collections import OrderedDict
from typing import Any
from unittest.mock import patch

import pytest
from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from langgraph.store.memory import InMemoryStore
from pydantic import ValidationError
from typing_extensions import TypedDict

from multiagent.errors import ConfigError
from multiagent.models.ledger import RunLedger
from multiagent.nodes import context as context_module
from multiagent.nodes.context import (
    AnyContext,
    WorkflowContext,
    build_context,
    context_of,
    resolve_context,
)
from multiagent.nodes.run_context import (
    MEMORY_MODES,
    MemoryMode,
    PolicyName,
    ProfileName,
    RunContext,
)
from multiagent.persistence.store_memory import StoreAgentMemory, agent_namespace
from multiagent.policies import BUILTIN_PROFILES, COST_POLICIES, load_settings


def _runtime(context: Any, store: Any = None) -> Runtime[Any]:
    return Runtime(context=context, store=store)


def test_the_names_a_context_accepts_are_the_builtin_ones() -> None:
    assert set(typing.get_args(ProfileName)) == set(BUILTIN_PROFILES)
    assert set(typing.get_args(PolicyName)) == set(COST_POLICIES)
    assert typing.get_args(MemoryMode) == MEMORY_MODES


def test_every_field_has_a_default_and_bad_values_are_refused() -> None:
    assert RunContext() == RunContext.model_validate({})
    with pytest.raises(ValidationError, match="no_such_profile"):
        RunContext.model_validate({"profile": "no_such_profile"})
    with pytest.raises(ValidationError, match="budget_usd"):
        RunContext(budget_usd=-1)
    with pytest.raises(ValidationError, match="colour"):
        RunContext.model_validate({"colour": "red"})


def test_a_rich_context_passes_through_unchanged() -> None:
    rich = build_context(load_settings())
    assert context_of(_runtime(rich)) is rich


def test_plain_values_resolve_once_per_process_for_each_distinct_set() -> None:
    first = context_of(_runtime({"profile": "dev_cost", "memory": "off"}))
    again = context_of(_runtime(RunContext(profile="dev_cost", memory="off")))
    other = context_of(_runtime({"profile": "prod_quality", "memory": "off"}))
    assert first.settings.env == "dev_cost"
    assert other.settings.env == "prod_quality"
    assert again.pipeline is first.pipeline  # built once for these values
    assert again.agents is first.agents
    assert other.pipeline is not first.pipeline
    assert first.ledger.budget_usd == first.settings.profile.budget_usd
    assert first.memory is None


def test_budget_and_model_come_from_the_context() -> None:
    context = resolve_context(RunContext(budget_usd=0.25, model="gpt-4o", memory="off"))
    assert context.ledger.budget_usd == 0.25
    models = context.settings.profile.models
    assert (models.fast, models.standard, models.premium) == ("gpt-4o",) * 3


def test_an_unpriced_context_model_is_named_as_the_run_contexts_not_the_cli() -> None:
    with pytest.raises(ConfigError) as caught:
        resolve_context(RunContext(model="no-such-model", memory="off"))
    message = str(caught.value)
    assert "model 'no-such-model' has no price" in message
    assert "from the run context's model)" in message
    assert "cli" not in message
    # the explicit arguments of load_settings (the CLI's and the API's) keep their wording
    with pytest.raises(ConfigError, match=r"from cli models\.fast\)"):
        load_settings(overrides={"models.fast": "no-such-model"})


def test_no_context_runs_with_the_defaults_and_no_embedded_memory() -> None:
    context = context_of(_runtime(None))
    assert context.settings.env == load_settings().env
    assert context.memory is None


def test_a_store_serves_as_agent_memory_unless_memory_is_off() -> None:
    store = InMemoryStore()
    assert isinstance(context_of(_runtime(None, store)).memory, StoreAgentMemory)
    assert isinstance(context_of(_runtime({}, store)).memory, StoreAgentMemory)
    assert context_of(_runtime({"memory": "off"}, store)).memory is None


def test_store_memory_keeps_one_item_per_text_in_the_agents_namespace() -> None:
    store = InMemoryStore()
    memory = StoreAgentMemory(store)
    memory.remember("critic", ["risk one", "risk two"], metadata={"thread_id": "t1"})
    memory.remember("critic", ["risk one"], metadata={"thread_id": "t2"})
    memory.remember("writer", ["a draft"])
    items = store.search(agent_namespace("critic"), limit=10)
    assert sorted(item.value["text"] for item in items) == ["risk one", "risk two"]
    assert {i.value["text"]: i.value["thread_id"] for i in items}["risk one"] == "t2"
    assert sorted(memory.recall("critic", "risk", k=5)) == ["risk one", "risk two"]
    assert len(memory.recall("critic", "risk", k=1)) == 1
    assert memory.recall("writer", "draft") == ["a draft"]
    assert memory.recall("nobody", "x") == []


class _Seen(TypedDict):
    ledgers: typing.Annotated[list[int], lambda a, b: a + b]


def _ledger_graph() -> Any:
    def node(state: _Seen, *, runtime: Runtime[AnyContext]) -> dict[str, list[int]]:
        return {"ledgers": [id(context_of(runtime).ledger)]}

    graph: StateGraph[_Seen, AnyContext, _Seen, _Seen] = StateGraph(
        _Seen, context_schema=RunContext
    )
    graph.add_node("one", node)
    graph.add_node("two", node)
    graph.add_edge(START, "one")
    graph.add_edge("one", "two")
    graph.add_edge("two", END)
    return graph.compile()


def test_the_nodes_of_one_run_share_its_ledger() -> None:
    graph = _ledger_graph()
    context = {"memory": "off", "budget_usd": 1.0}
    first = graph.invoke(
        {"ledgers": []}, context=context, config={"configurable": {"run_id": "run-a"}}
    )["ledgers"]
    second = graph.invoke(
        {"ledgers": []}, context=context, config={"configurable": {"run_id": "run-b"}}
    )["ledgers"]
    assert len(set(first)) == 1  # both nodes of run-a: one ledger, one budget
    assert set(first) != set(second)


def test_the_nodes_of_one_run_share_its_ledger_without_a_run_id() -> None:
    # in process, ``invoke(..., context={...})`` carries no run id: one run is still one budget
    graph = _ledger_graph()
    context = {"memory": "off", "budget_usd": 1.0}
    first = graph.invoke({"ledgers": []}, context=context)["ledgers"]
    second = graph.invoke({"ledgers": []}, context=context)["ledgers"]
    assert len(first) == 2
    assert len(set(first)) == 1
    assert set(first) != set(second)  # the next run starts with its own budget


def test_a_run_keeps_its_ledger_however_many_runs_start_beside_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Past the ledgers kept, only one idle for a while with nothing reserved goes: a long run
    on a busy server keeps its budget between its nodes."""
    monkeypatch.setattr(context_module, "_LEDGERS_KEPT", 2)
    monkeypatch.setattr(context_module, "_ledgers", OrderedDict())
    now = [1000.0]
    monkeypatch.setattr(context_module.time, "monotonic", lambda: now[0])

    def ledger_of(run_id: str) -> RunLedger:
        config = {"configurable": {"run_id": run_id}}
        with patch.object(context_module, "get_config", lambda: config):
            return context_module._run_ledger(1.0, None)

    long_run = ledger_of("long")
    held = long_run.reserve(0.1)  # a call of the long run in flight
    shorts = [ledger_of(f"short-{n}") for n in range(5)]  # other runs start meanwhile
    assert ledger_of("long") is long_run  # the next node: the same ledger, the same budget
    now[0] += 3600  # an hour on, the short runs long over
    long_run.release(held)
    later = ledger_of("another")
    assert len(context_module._ledgers) == 2  # the idle ones went, down to the bound
    assert ledger_of("another") is later
    assert ledger_of("short-0") is not shorts[0]  # a forgotten run would start afresh


def test_a_workflow_context_is_still_what_build_context_returns() -> None:
    assert isinstance(build_context(load_settings(), budget_usd=0.5), WorkflowContext)
