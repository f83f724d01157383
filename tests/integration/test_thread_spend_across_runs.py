"""A thread's spend counts every run's calls, those of a node that raised included: a resume is
given only what the thread has left, and its usage agrees with the ledgers of all its runs."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from langchain_core.messages import AIMessage, BaseMessage
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.memory import InMemorySaver

from multiagent.graphs.inputs import orchestration_input
from multiagent.graphs.report import outcome_report
from multiagent.graphs.run_outcome import WorkflowOutcome
from multiagent.graphs.runner import run_workflow
from multiagent.graphs.threads import list_threads, thread_state
from multiagent.models.ledger import RunLedger
from multiagent.models.pipeline import ModelPipeline
from multiagent.models.retry import RetryPolicy
from multiagent.nodes.agents import BUILTIN_AGENTS, AgentSpec
from multiagent.nodes.agents_file import AgentCatalog
from multiagent.nodes.context import build_context
from multiagent.persistence.checkpointer import open_checkpointer
from multiagent.persistence.pruning import SqliteCheckpointStore
from multiagent.persistence.run_usage import recorded_runs
from multiagent.policies import ModelPrice, Settings, load_settings
from tests.unit.test_bring_your_own_model import EVERY_ANSWER, ToolCallingFake, shout

PRICE = ModelPrice(input_per_mtok=1.0, output_per_mtok=2.0)
TOOL_CALL = AIMessage("", tool_calls=[{"name": "shout", "args": {"text": "go"}, "id": "c1"}])


class Flaky(ToolCallingFake):
    """Replies from its script; a ``ConnectionError`` in the script is raised, not replied."""

    def _generate(self, messages: list[BaseMessage], *args: Any, **kwargs: Any) -> Any:
        nxt = next(self.messages)
        if isinstance(nxt, BaseException):
            raise nxt
        self.messages = _prepend(nxt, self.messages)
        return super()._generate(messages, *args, **kwargs)


def _prepend(first: Any, rest: Iterator[Any]) -> Iterator[Any]:
    yield first
    yield from rest


@pytest.fixture
def settings() -> Settings:
    return load_settings(overrides={"cache.completion_enabled": False})


@contextmanager
def saver_of(kind: str, settings: Settings) -> Iterator[BaseCheckpointSaver[Any]]:
    if kind == "memory":
        yield InMemorySaver()
        return
    with open_checkpointer(settings, kind=kind) as saver:
        yield saver


def run(
    settings: Settings, saver: BaseCheckpointSaver[Any], script: list[Any], *, resume: bool
) -> WorkflowOutcome:
    researcher = AgentSpec(name="researcher", role="You are the researcher.", tools=(shout,))
    agents = AgentCatalog([*[a for a in BUILTIN_AGENTS if a.name != "researcher"], researcher])
    pipeline = ModelPipeline(
        settings, model=Flaky(messages=iter(script)), price=PRICE, retry=RetryPolicy(attempts=1)
    )
    inputs = orchestration_input("Launch", agents=agents, team=["researcher"])
    return run_workflow(
        "orchestration",
        {**inputs, "planner_picks": True},
        context=build_context(
            settings, agents=agents, pipeline=pipeline, budget_usd=1.0, analysis_cache=None
        ),
        checkpointer=saver,
        thread_id="t-1",
        resume=resume,
    )


@pytest.mark.parametrize("kind", ["sqlite", "memory", "postgres"])
def test_a_node_that_raised_after_a_paid_call_still_counts_on_resume(
    kind: str, settings: Settings, request: pytest.FixtureRequest
) -> None:
    if kind == "postgres":
        request.getfixturevalue("postgres_url")
        settings = load_settings(overrides={"cache.completion_enabled": False})
    with saver_of(kind, settings) as saver:
        # the plan, then the researcher's tool call (paid), then its next call fails
        failed = run(
            settings, saver, [AIMessage(EVERY_ANSWER), TOOL_CALL, ConnectionError("down")],
            resume=False,
        )  # fmt: skip
        assert failed.status == "failed"
        paid = failed.ledger.totals()
        assert (paid["calls"], paid["errors"]) == (3, 1)
        assert paid["cost_usd"] > 0
        # only the planner's call reached the state: the researcher's node raised
        in_state = sum(e["cost_usd"] for e in failed.values["usage"])
        assert in_state < paid["cost_usd"]
        assert outcome_report(failed)["usage"]["cost_usd"] == paid["cost_usd"]

        # the resume is charged what the whole first run spent, the tool call included
        resumed = run(
            settings, saver, [TOOL_CALL, AIMessage("GO was said"), AIMessage("synthesis")],
            resume=True,
        )  # fmt: skip
        assert resumed.status == "completed"
        assert resumed.spent_before_usd == paid["cost_usd"]
        assert resumed.ledger.budget_usd == pytest.approx(1.0 - paid["cost_usd"])

        both = RunLedger(calls=[*failed.ledger.calls, *resumed.ledger.calls]).totals()
        usage = outcome_report(resumed)["usage"]
        assert usage == {key: both[key] for key in usage}
        # the thread's listing and its state agree with the ledgers
        (row,) = list_threads(saver)
        assert row["cost_usd"] == both["cost_usd"]
        assert thread_state(saver, "t-1")["usage"] == usage
        assert set(recorded_runs(saver, "t-1")) == {failed.ledger.run_id, resumed.ledger.run_id}


def test_a_deleted_thread_forgets_its_runs(settings: Settings) -> None:
    with open_checkpointer(settings) as saver:
        run(settings, saver, [AIMessage(EVERY_ANSWER), TOOL_CALL, ConnectionError("down")],
            resume=False)  # fmt: skip
        assert recorded_runs(saver, "t-1")
        SqliteCheckpointStore(saver).delete_threads(["t-1"])  # type: ignore[arg-type]
        assert recorded_runs(saver, "t-1") == {}
