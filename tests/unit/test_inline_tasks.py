"""A run taking one task at a time runs its ``Send`` tasks on the calling thread, in order."""

from __future__ import annotations

import operator
import threading
from typing import Annotated, Any

import pytest
from langchain_core.runnables import RunnableConfig
from langgraph.graph import END, START, StateGraph
from langgraph.types import Send
from typing_extensions import TypedDict

from multiagent.graphs._inline import one_task_at_a_time


class _State(TypedDict):
    items: list[int]
    seen: Annotated[list[tuple[int, int]], operator.add]


def _graph(fail_on: int | None = None) -> Any:
    def fan_out(state: _State) -> list[Send]:
        return [Send("work", {"item": item}) for item in state["items"]]

    def work(task: dict[str, Any]) -> dict[str, Any]:
        if task["item"] == fail_on:
            raise ValueError(f"item {fail_on} failed")
        return {"seen": [(task["item"], threading.get_ident())]}

    graph = StateGraph(_State)
    graph.add_node("work", work)  # type: ignore[call-overload]
    graph.add_conditional_edges(START, fan_out, ["work"])
    graph.add_edge("work", END)
    return graph.compile()


def _config(*, inline: bool) -> tuple[RunnableConfig, Any]:
    config: RunnableConfig = {"max_concurrency": 1}
    kept = one_task_at_a_time(config) if inline else None
    return config, kept


def test_tasks_run_on_the_calling_thread_and_all_finish() -> None:
    config, kept = _config(inline=True)
    assert kept is not None
    out = _graph().invoke({"items": [1, 2, 3, 4], "seen": []}, config)
    assert sorted(item for item, _ in out["seen"]) == [1, 2, 3, 4]
    assert {thread for _, thread in out["seen"]} == {threading.get_ident()}


def test_without_it_the_tasks_run_on_a_pool_thread() -> None:
    # the cost the inline runner removes: a reference that this test's LangGraph still pools
    config, _ = _config(inline=False)
    out = _graph().invoke({"items": [1, 2], "seen": []}, config)
    assert threading.get_ident() not in {thread for _, thread in out["seen"]}


def test_a_failing_task_raises_from_the_run() -> None:
    config, kept = _config(inline=True)
    assert kept is not None
    with pytest.raises(ValueError, match="item 2 failed"):
        _graph(fail_on=2).invoke({"items": [1, 2, 3], "seen": []}, config)


def test_the_callers_configurable_is_kept() -> None:
    config: RunnableConfig = {"max_concurrency": 1, "configurable": {"thread_id": "t-1"}}
    kept = one_task_at_a_time(config)
    assert kept is not None
    assert config["configurable"]["thread_id"] == "t-1"
    out = _graph().invoke({"items": [7], "seen": []}, config)
    assert out["seen"][0][0] == 7
