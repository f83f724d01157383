"""A caller's own LangSmith tracer (a notebook's, an evaluation's) sends placeholders when the
run's profile redacts, to the caller's project and endpoint, and is used as given when it does
not; a run nested in a traced step stays in the trace.

Runs go to a LangSmith stand-in on 127.0.0.1 through the caller's ``Client``; the CRM tool
brings every kind of personal value into the run, as the CLI test's does."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from langchain_core.callbacks import CallbackManager
from langchain_core.runnables import RunnableConfig
from langchain_core.tracers.context import tracing_v2_enabled
from langchain_core.tracers.langchain import LangChainTracer
from langgraph.graph import StateGraph
from langsmith import Client, traceable, tracing_context
from typing_extensions import TypedDict

from multiagent.graphs.orchestration import build_orchestration_graph
from multiagent.observability import langsmith_redaction
from multiagent.observability.langsmith_redaction import flush_redacting_client
from multiagent.observability.tracing import configure_tracing, shutdown_tracing
from multiagent.policies import load_settings
from tests.integration._langsmith_capture import CapturedRuns, langsmith_capture
from tests.integration._pii_scan import PII_TEXT, RAW, leaks

pytestmark = pytest.mark.slow

PROJECT = "callers-project"
TASK = f"Answer the case of {RAW['email']}"
REDACTING = {"profile": "prod_balanced", "memory": "off"}
AS_GIVEN = {"profile": "dev_balanced", "memory": "off"}
_CRM_TOOL = f'''
from langchain_core.tools import tool


@tool
def lookup_customer(name: str) -> str:
    """Look a customer up in the CRM by name."""
    return "record: {PII_TEXT.replace("'", "")}"
'''


@pytest.fixture
def crm_clerk(
    isolated_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    """An agent ``clerk`` whose CRM tool answers with every kind of personal value."""
    (tmp_path / "crm_tool_inproc.py").write_text(_CRM_TOOL, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    isolated_env.mkdir(parents=True, exist_ok=True)
    (isolated_env / "agents.toml").write_text(
        '[agents.clerk]\nrole = "You are the researcher for customer cases."\n'
        'tools = ["crm_tool_inproc:lookup_customer"]\n',
        encoding="utf-8",
    )
    yield
    sys.modules.pop("crm_tool_inproc", None)


def _run(config: Any, context: dict[str, str]) -> Any:
    graph = build_orchestration_graph().compile()
    given = {"task": TASK, "team": ["clerk"], "planner_picks": False}
    return graph.invoke(given, config, context=context)


def _leaks(captured: CapturedRuns) -> list[Any]:
    return _leaks_in(captured.all())


def _leaks_in(runs: list[dict[str, Any]]) -> list[Any]:
    sent = [(f"langsmith {r.get('name')}", json.dumps(r, ensure_ascii=False).encode())
            for r in runs]  # fmt: skip
    return leaks(iter(sent))


def _tool_output(captured: CapturedRuns) -> str:
    (tool,) = [r for r in captured.all() if r.get("run_type") == "tool"]
    return json.dumps(tool["outputs"], ensure_ascii=False)


def test_a_callers_tracer_sends_placeholders_to_its_project_when_the_profile_redacts(
    crm_clerk: None,
) -> None:
    # LANGSMITH_TRACING is off (conftest): the caller's tracer is the only way runs leave
    with langsmith_capture() as (endpoint, captured):
        client = Client(api_url=endpoint, api_key="dummy")
        tracer = LangChainTracer(project_name=PROJECT, client=client, tags=["notebook"])
        out = _run({"callbacks": [tracer]}, REDACTING)
        client.flush()
        flush_redacting_client()
        runs = captured.all()
    assert "[REDACTED_EMAIL]" in out["task"]
    assert "[REDACTED_CARD]" in _tool_output(captured)
    assert _leaks(captured) == []  # the tool's result, the task, the answer, the tool call
    roots = [r for r in runs if r.get("parent_run_id") is None]
    assert [r["name"] for r in roots] == ["LangGraph"]
    assert "[REDACTED_EMAIL]" in json.dumps(roots[0]["inputs"])
    assert {r["session_name"] for r in runs} == {PROJECT}
    assert "notebook" in roots[0]["tags"]
    # every run is in the one trace under the root
    assert {r["trace_id"] for r in runs} == {roots[0]["id"]}
    # the caller's tracer and client are as they were: their own work is not redacted
    assert tracer.client is client
    assert getattr(client, "_anonymizer", None) is None
    # yet the tracer knows the run its copy traced (``tracer.get_run_url()`` reads it)
    assert tracer.latest_run is not None
    assert str(tracer.latest_run.id) == roots[0]["id"]


def test_a_callers_tracer_is_used_as_given_when_the_profile_does_not_redact(
    crm_clerk: None,
) -> None:
    with langsmith_capture() as (endpoint, captured):
        client = Client(api_url=endpoint, api_key="dummy")
        tracer = LangChainTracer(project_name=PROJECT, client=client)
        _run({"callbacks": [tracer]}, AS_GIVEN)
        client.flush()
        runs = captured.all()
    assert RAW["phone"] in _tool_output(captured)
    assert {r["session_name"] for r in runs} == {PROJECT}
    assert tracer.latest_run is not None  # the given tracer itself traced the run
    assert tracer.latest_run.name == "LangGraph"


def test_a_tracer_in_a_callback_manager_and_tracing_v2_enabled_redact_too(
    crm_clerk: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    made: list[Client] = []

    class Counted(Client):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(langsmith_redaction, "Client", Counted)
    with langsmith_capture() as (endpoint, captured):
        client = Client(api_url=endpoint, api_key="dummy")
        tracer = LangChainTracer(project_name=PROJECT, client=client)
        manager = CallbackManager(handlers=[tracer], inheritable_handlers=[tracer])
        _run({"callbacks": manager}, REDACTING)
        # LangChain traces through this one whatever LANGSMITH_TRACING says
        with tracing_v2_enabled(project_name="context-project", client=client):
            _run(None, REDACTING)
        client.flush()
        flush_redacting_client()
        runs = captured.all()
    assert _leaks(captured) == []
    roots = [r for r in runs if r.get("parent_run_id") is None]
    assert sorted(r["session_name"] for r in roots) == sorted(["context-project", PROJECT])
    assert len(made) == 1  # one redacting client for the caller's client, not one per run


class _Outer(TypedDict):
    task: str
    answer: str


@pytest.mark.parametrize("call", ["invoke", "invoke with the step's config", "ainvoke"])
def test_a_redacting_run_nested_in_a_traced_step_stays_in_the_enclosing_trace(
    crm_clerk: None, call: str
) -> None:
    # the enclosing run does not redact (its tracer is the caller's), the nested one does and
    # gets the caller's tracer handed down by LangGraph
    inner = build_orchestration_graph().compile()
    given = {"team": ["clerk"], "planner_picks": False}

    def delegate(state: _Outer) -> dict[str, str]:
        done = inner.invoke({**given, "task": state["task"]}, context=REDACTING)
        return {"answer": str(done.get("answer", ""))}

    def delegate_with(state: _Outer, config: RunnableConfig) -> dict[str, str]:
        done = inner.invoke({**given, "task": state["task"]}, config, context=REDACTING)
        return {"answer": str(done.get("answer", ""))}

    async def adelegate(state: _Outer) -> dict[str, str]:
        done = await inner.ainvoke({**given, "task": state["task"]}, context=REDACTING)
        return {"answer": str(done.get("answer", ""))}

    outer = StateGraph(_Outer)
    nodes = {"invoke": delegate, "ainvoke": adelegate}
    outer.add_node("delegate", nodes.get(call, delegate_with))
    outer.set_entry_point("delegate")
    graph = outer.compile()
    with langsmith_capture() as (endpoint, captured):
        client = Client(api_url=endpoint, api_key="dummy")
        tracer = LangChainTracer(project_name=PROJECT, client=client)
        config: Any = {"callbacks": [tracer]}
        if call == "ainvoke":
            asyncio.run(graph.ainvoke({"task": TASK}, config))
        else:
            graph.invoke({"task": TASK}, config)
        client.flush()
        flush_redacting_client()
        runs = {r["id"]: r for r in captured.all()}
    (step,) = [r for r in runs.values() if r.get("name") == "delegate"]
    (nested,) = [r for r in runs.values() if r.get("parent_run_id") == step["id"]]
    assert nested["trace_id"] == step["trace_id"]
    assert nested["dotted_order"].startswith(step["dotted_order"] + ".")
    assert "[REDACTED_CARD]" in _tool_output(captured)
    # the enclosing run's own input went as given; nothing of the nested run did
    assert RAW["email"] in json.dumps(step["inputs"], ensure_ascii=False)
    nested_runs = [r for r in runs.values() if r["dotted_order"].startswith(nested["dotted_order"])]
    assert len(nested_runs) > 5
    assert _leaks_in(nested_runs) == []


@pytest.mark.parametrize("langsmith", ["true", "false"])  # a caller's tracer traces either way
def test_shutdown_sends_the_runs_of_a_callers_redacting_tracer(
    crm_clerk: None, monkeypatch: pytest.MonkeyPatch, langsmith: str
) -> None:
    monkeypatch.setenv("LANGSMITH_TRACING", langsmith)
    flushed: list[Client] = []
    flush = Client.flush

    def recorded(self: Client, timeout: float | None = None) -> None:
        flushed.append(self)
        flush(self, timeout)

    with langsmith_capture() as (endpoint, captured):
        monkeypatch.setenv("LANGSMITH_ENDPOINT", endpoint)
        monkeypatch.setenv("LANGSMITH_API_KEY", "dummy")
        configure_tracing(load_settings())  # as the CLI and the server set tracing up
        client = Client(api_url=endpoint, api_key="dummy")
        tracer = LangChainTracer(project_name=PROJECT, client=client)
        _run({"callbacks": [tracer]}, REDACTING)
        monkeypatch.setattr(Client, "flush", recorded)
        shutdown_tracing()
        runs = captured.all()
    assert _leaks(captured) == []
    (root,) = [r for r in runs if r.get("parent_run_id") is None]
    # the run's end was sent, not only its start
    assert root["outputs"]
    assert root.get("end_time")
    from multiagent.observability.langsmith_redaction import redacting_twin

    assert any(c is redacting_twin(client) for c in flushed)  # sent by shutdown, not by chance


def test_a_run_inside_a_traceable_function_redacts_through_that_functions_client(
    crm_clerk: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a LangSmith evaluation's target, say: the run joins the function's trace, at its endpoint
    with langsmith_capture() as (endpoint, captured), langsmith_capture() as (other, elsewhere):
        monkeypatch.setenv("LANGSMITH_ENDPOINT", other)  # the process's own destination
        monkeypatch.setenv("LANGSMITH_API_KEY", "dummy")
        client = Client(api_url=endpoint, api_key="dummy")

        @traceable(client=client, project_name=PROJECT)
        def target(task: str) -> Any:
            return _run(None, REDACTING)

        with tracing_context(enabled=True):
            target(TASK)
        client.flush()
        flush_redacting_client()
        runs = captured.all()
    assert "[REDACTED_CARD]" in _tool_output(captured)
    assert elsewhere.all() == []
    (root,) = [r for r in runs if r.get("parent_run_id") is None]
    assert root["name"] == "target"
    assert {r["trace_id"] for r in runs} == {root["id"]}
    assert {r["session_name"] for r in runs} == {PROJECT}
    # the function's own input is the caller's business: the graph's runs hold placeholders
    assert _leaks_in([r for r in runs if r is not root]) == []
