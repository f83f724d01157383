"""Tracing: run_config on real LangGraph graphs running the simulated model, OpenTelemetry spans
in the SDK's in-memory exporter, a LangChain tracer's view, and OTLP over HTTP on 127.0.0.1."""

from __future__ import annotations

import asyncio
import operator
from collections.abc import Iterator
from typing import Annotated, Any
from uuid import UUID

import pytest
from fastapi import FastAPI, Request, Response
from langchain_core.messages import AIMessage
from langchain_core.outputs import ChatGeneration, LLMResult
from langchain_core.runnables import RunnableConfig
from langchain_core.runnables.config import merge_configs
from langchain_core.tracers.base import BaseTracer
from langchain_core.tracers.schemas import Run
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph
from langgraph.types import interrupt
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from typing_extensions import TypedDict

from multiagent._serve import serve_in_thread
from multiagent.errors import ConfigError, UsageError
from multiagent.graphs.inputs import orchestration_input
from multiagent.graphs.runner import run_workflow
from multiagent.graphs.validation import build_validation_graph
from multiagent.nodes.agents_file import load_agents
from multiagent.nodes.context import build_context
from multiagent.observability.tracing import (
    TracingEnvironment,
    active_tracing,
    configure_tracing,
    run_config,
    shutdown_tracing,
)
from multiagent.policies import Settings, load_settings
from multiagent.sim.model import SimulatedChatModel


class State(TypedDict):
    text: str
    replies: Annotated[list[str], operator.add]


def _graph(*, failing: bool = False, pause: bool = False) -> Any:
    """plan → answer, each node one call of the simulated model as a named agent."""
    ok = SimulatedChatModel(model="gpt-4o-mini", ttft_s=0, token_latency_s=0)
    broken = SimulatedChatModel(model="gpt-4o", server_error_rate=1.0, ttft_s=0)

    def plan(state: State) -> dict[str, Any]:
        reply = ok.invoke(state["text"], {"metadata": {"agent": "planner"}})
        return {"replies": [reply.text]}

    def answer(state: State) -> dict[str, Any]:
        if pause:
            interrupt({"question": "approve?"})
        model = broken if failing else ok
        reply = model.invoke(state["replies"][-1], {"metadata": {"agent": "analyst"}})
        return {"replies": [reply.text]}

    builder = StateGraph(State)
    builder.add_node("plan", plan)
    builder.add_node("answer", answer)
    builder.add_edge(START, "plan")
    builder.add_edge("plan", "answer")
    builder.add_edge("answer", END)
    return builder


@pytest.fixture
def settings() -> Settings:
    return load_settings()


@pytest.fixture
def spans(settings: Settings) -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    configure_tracing(settings, exporter=exporter)
    yield exporter
    shutdown_tracing()


def _config(settings: Settings, thread: str = "t-1", **kwargs: Any) -> RunnableConfig:
    traced = run_config(workflow="demo", settings=settings, thread_id=thread, **kwargs)
    return merge_configs({"configurable": {"thread_id": thread}}, traced)  # type: ignore[arg-type]


def _by_name(finished: tuple[ReadableSpan, ...]) -> dict[str, list[ReadableSpan]]:
    out: dict[str, list[ReadableSpan]] = {}
    for span in finished:
        out.setdefault(span.name, []).append(span)
    return out


def _parent_id(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def test_run_config_is_a_plain_mergeable_dict(settings: Settings) -> None:
    config = run_config(
        workflow="meeting",
        settings=settings,
        thread_id="t-9",
        correlation_id="corr-1",
        agents=["analyst", "critic"],
    )
    assert config["run_name"] == "multiagent.meeting"
    assert {"multiagent", "workflow:meeting", "profile:dev_balanced", "policy:balanced"} <= set(
        config["tags"]
    )
    assert {"agent:analyst", "agent:critic"} <= set(config["tags"])
    assert config["metadata"] == {
        "workflow": "meeting",
        "profile": "dev_balanced",
        "policy": "balanced",
        "provider": "sim",
        "thread_id": "t-9",
        "correlation_id": "corr-1",
        "agents": "analyst,critic",
    }
    # nothing configured: nothing exported, no tracing handler; the dashboard's recorder only
    assert [type(h).__name__ for h in config["callbacks"]] == ["LiveRunRecorder"]
    assert (
        run_config(workflow="meeting", settings=settings, thread_id="t-9", live=False)["callbacks"]
        == []
    )
    fresh = run_config(workflow="run", settings=settings, thread_id="t")["metadata"]
    assert len(fresh["correlation_id"]) == 32
    with pytest.raises(UsageError, match="workflow and a thread id"):
        run_config(workflow="demo", settings=settings, thread_id=" ")


def test_one_trace_with_node_and_model_spans(
    settings: Settings, spans: InMemorySpanExporter
) -> None:
    result = (
        _graph()
        .compile()
        .invoke(
            {"text": "Compare two launch plans", "replies": []},
            _config(settings, correlation_id="corr-42"),
        )
    )
    finished = spans.get_finished_spans()
    named = _by_name(finished)
    assert set(named) == {"multiagent.demo", "plan", "answer", "chat gpt-4o-mini"}
    (root,) = named["multiagent.demo"]
    assert root.parent is None
    assert len({s.context.trace_id for s in finished}) == 1
    for node in ("plan", "answer"):
        assert _parent_id(named[node][0]) == root.context.span_id
    calls = named["chat gpt-4o-mini"]
    node_ids = {named[node][0].context.span_id for node in ("plan", "answer")}
    assert {_parent_id(call) for call in calls} == node_ids
    for span in finished:
        attrs = span.attributes or {}
        assert attrs["multiagent.thread_id"] == "t-1"
        assert attrs["multiagent.correlation_id"] == "corr-42"
        assert attrs["multiagent.profile"] == "dev_balanced"
        assert attrs["multiagent.policy"] == "balanced"
        assert span.status.status_code is StatusCode.UNSET
    price = settings.profile.price_of("gpt-4o-mini")
    assert price is not None
    agents = set()
    for call in calls:
        attrs = call.attributes or {}
        assert call.kind is SpanKind.CLIENT
        assert attrs["gen_ai.request.model"] == "gpt-4o-mini"
        tokens_in, tokens_out = (
            attrs["gen_ai.usage.input_tokens"],
            attrs["gen_ai.usage.output_tokens"],
        )
        assert isinstance(tokens_in, int)
        assert isinstance(tokens_out, int)
        assert tokens_in > 0
        assert tokens_out > 0
        assert attrs["multiagent.cost_usd"] == pytest.approx(price.cost(tokens_in, tokens_out))
        assert attrs["multiagent.cached"] is False
        agents.add(attrs["multiagent.agent"])
    assert agents == {"planner", "analyst"}
    assert len(result["replies"]) == 2


def test_a_failing_call_marks_its_span_and_the_trace(
    settings: Settings, spans: InMemorySpanExporter
) -> None:
    with pytest.raises(Exception, match="simulated"):
        _graph(failing=True).compile().invoke({"text": "go", "replies": []}, _config(settings))
    named = _by_name(spans.get_finished_spans())
    (failed,) = named["chat gpt-4o"]
    attrs = failed.attributes or {}
    assert failed.status.status_code is StatusCode.ERROR
    assert attrs["error.type"] == "InternalServerError"
    assert attrs["multiagent.error_kind"] == "server"
    assert attrs["multiagent.agent"] == "analyst"
    assert any(event.name == "exception" for event in failed.events)
    assert named["multiagent.demo"][0].status.status_code is StatusCode.ERROR
    assert named["plan"][0].status.status_code is StatusCode.UNSET


def test_an_interrupt_is_not_an_error(settings: Settings, spans: InMemorySpanExporter) -> None:
    graph = _graph(pause=True).compile(checkpointer=InMemorySaver())
    graph.invoke({"text": "go", "replies": []}, _config(settings, thread="t-pause"))
    named = _by_name(spans.get_finished_spans())
    (answer,) = named["answer"]
    assert answer.status.status_code is StatusCode.UNSET
    assert (answer.attributes or {})["multiagent.interrupted"] is True
    assert all(s.status.status_code is StatusCode.UNSET for s in spans.get_finished_spans())


class _Collector(BaseTracer):
    """A LangChain tracer keeping finished root runs, as LangSmith's tracer receives them."""

    def __init__(self) -> None:
        super().__init__()
        self.roots: list[Run] = []

    def _persist_run(self, run: Run) -> None:
        self.roots.append(run)


def _walk(run: Run) -> Iterator[Run]:
    yield run
    for child in run.child_runs:
        yield from _walk(child)


def test_a_langchain_tracer_receives_name_tags_and_metadata(settings: Settings) -> None:
    tracer = _Collector()
    config = _config(settings, correlation_id="corr-7")
    config["callbacks"] = [*config.get("callbacks", []), tracer]  # type: ignore[misc]
    _graph().compile().invoke({"text": "Draft a plan", "replies": []}, config)
    (root,) = tracer.roots
    assert root.name == "multiagent.demo"
    assert {"multiagent", "workflow:demo", "profile:dev_balanced"} <= set(root.tags or [])
    metadata = root.extra["metadata"]
    assert (metadata["thread_id"], metadata["correlation_id"]) == ("t-1", "corr-7")
    assert metadata["policy"] == "balanced"
    chats = [run for run in _walk(root) if run.run_type == "llm"]
    assert {run.extra["metadata"]["agent"] for run in chats} == {"planner", "analyst"}
    assert all(run.extra["metadata"]["correlation_id"] == "corr-7" for run in chats)


def test_a_real_workflow_traces_agents_tokens_and_cost(
    settings: Settings, spans: InMemorySpanExporter
) -> None:
    traced = run_config(workflow="orchestration", settings=settings, thread_id="wf-1")
    agents = load_agents(settings)
    outcome = run_workflow(
        "orchestration",
        orchestration_input("Plan a product launch", agents=agents, team=["analyst", "critic"]),
        context=build_context(settings, agents=agents),
        checkpointer=None,
        thread_id="wf-1",
        metadata=traced["metadata"],
        callbacks=traced["callbacks"],
    )
    assert outcome.status == "completed"
    calls = [s for s in spans.get_finished_spans() if s.kind is SpanKind.CLIENT]
    assert len(calls) == len(outcome.ledger.calls)
    agents_seen = {(s.attributes or {}).get("multiagent.agent") for s in calls}
    assert {"analyst", "critic"} <= agents_seen
    cost = sum(float((s.attributes or {})["multiagent.cost_usd"]) for s in calls)  # type: ignore[arg-type]
    assert cost == pytest.approx(sum(call.cost_usd for call in outcome.ledger.calls))
    assert all((s.attributes or {})["multiagent.thread_id"] == "wf-1" for s in calls)
    # the parallel tasks of one node are told apart, by name and by agent
    tasks = {s.name: s for s in spans.get_finished_spans() if s.name.startswith("work")}
    assert sorted(tasks) == ["work · analyst", "work · critic"]
    assert [(s.attributes or {})["multiagent.agent"] for s in tasks.values()] == [
        name.split(" · ")[1] for name in tasks
    ]
    for span in spans.get_finished_spans():  # each tag once, though run and caller both give it
        shown = list((span.attributes or {}).get("multiagent.tags", ()))
        assert len(shown) == len(set(shown)), shown


def _receiver(bodies: list[tuple[str, bytes]]) -> FastAPI:
    app = FastAPI()

    @app.post("/v1/traces")
    async def traces(request: Request) -> Response:
        bodies.append((request.headers.get("content-type", ""), await request.body()))
        return Response(b"", media_type="application/x-protobuf")

    return app


def test_otlp_http_exports_to_the_configured_endpoint(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    bodies: list[tuple[str, bytes]] = []
    with serve_in_thread(_receiver(bodies), host="127.0.0.1", port=0, what="otlp") as url:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", url)
        monkeypatch.setenv("OTEL_SERVICE_NAME", "multiagent-test")
        tracing = configure_tracing(settings)
        assert (tracing.exporter, tracing.endpoint) == ("otlp-http", f"{url}/v1/traces")
        assert active_tracing() is tracing
        _graph().compile().invoke({"text": "hello", "replies": []}, _config(settings))
        shutdown_tracing()  # flushes the batch processor
    assert active_tracing() is None
    assert bodies
    assert all(kind == "application/x-protobuf" for kind, _ in bodies)
    names: set[str] = set()
    services: set[str] = set()
    for _, body in bodies:
        request = ExportTraceServiceRequest.FromString(body)
        for resource_spans in request.resource_spans:
            for attr in resource_spans.resource.attributes:
                if attr.key == "service.name":
                    services.add(attr.value.string_value)
            for scope in resource_spans.scope_spans:
                names.update(span.name for span in scope.spans)
    assert names == {"multiagent.demo", "plan", "answer", "chat gpt-4o-mini"}
    assert services == {"multiagent-test"}


def test_tracing_environment_choices(settings: Settings) -> None:
    assert configure_tracing(settings, environment=TracingEnvironment()).provider is None
    off = TracingEnvironment(
        OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:1", OTEL_TRACES_EXPORTER="none"
    )
    assert configure_tracing(settings, environment=off).exporter == "none"
    bad = TracingEnvironment(
        OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:1", OTEL_EXPORTER_OTLP_PROTOCOL="thrift"
    )
    with pytest.raises(ConfigError, match="unknown OTLP protocol 'thrift'"):
        configure_tracing(settings, environment=bad)
    smith = TracingEnvironment(LANGSMITH_TRACING="true", LANGSMITH_PROJECT="demo")
    assert configure_tracing(settings, environment=smith).as_dict()["langsmith"] is True
    shutdown_tracing()


def test_a_call_under_an_untraced_parent_starts_its_own_trace(
    settings: Settings, spans: InMemorySpanExporter
) -> None:
    handler = run_config(workflow="demo", settings=settings, thread_id="t")["callbacks"][0]
    reply = AIMessage(
        "x",
        usage_metadata={"input_tokens": 3, "output_tokens": 4, "total_tokens": 7},
        response_metadata={"model_name": "gpt-4o"},
    )
    handler.on_chat_model_start(
        {}, [[]], run_id=UUID(int=8), parent_run_id=UUID(int=7), metadata={"agent": "critic"}
    )
    handler.on_llm_end(LLMResult(generations=[[ChatGeneration(message=reply)]]), run_id=UUID(int=8))
    (span,) = spans.get_finished_spans()
    assert span.parent is None
    attrs = span.attributes or {}
    assert (attrs["gen_ai.usage.input_tokens"], attrs["gen_ai.usage.output_tokens"]) == (3, 4)
    assert attrs["gen_ai.response.model"] == "gpt-4o"
    price = settings.profile.price_of("gpt-4o")
    assert price is not None
    assert attrs["multiagent.cost_usd"] == pytest.approx(price.cost(3, 4))


def _validation_spans(
    spans: InMemorySpanExporter, config: dict[str, Any], *, asynchronous: bool = False
) -> tuple[list[ReadableSpan], int]:
    """Run a workflow graph's validation as a notebook (or LangGraph Server) does: the spans it
    left and its model calls."""
    graph = build_validation_graph().compile(name="validation")
    given = {"items": [{"id": "a", "text": "Water boils at 100 C at sea level."}]}
    context = {"memory": "off"}
    state = (
        asyncio.run(graph.ainvoke(given, config, context=context))
        if asynchronous
        else graph.invoke(given, config, context=context)
    )
    return list(spans.get_finished_spans()), sum(u["calls"] for u in state["usage"])


@pytest.mark.parametrize("asynchronous", [False, True], ids=["invoke", "ainvoke"])
def test_a_workflow_graph_run_nobody_traced_is_traced_as_the_cli_traces_it(
    spans: InMemorySpanExporter, asynchronous: bool
) -> None:
    config = {"configurable": {"thread_id": "t-graph"}, "run_id": UUID(int=42)}
    finished, calls = _validation_spans(spans, config, asynchronous=asynchronous)
    [root] = [s for s in finished if s.parent is None]
    assert root.name == "multiagent.validation"
    attrs = root.attributes or {}
    assert attrs["multiagent.workflow"] == "validation"
    assert attrs["multiagent.profile"] == "dev_balanced"
    assert attrs["multiagent.thread_id"] == "t-graph"
    assert attrs["multiagent.correlation_id"] == str(UUID(int=42))
    assert {"workflow:validation", "profile:dev_balanced"} <= set(attrs["multiagent.tags"])  # type: ignore[arg-type]
    chats = [s for s in finished if s.kind is SpanKind.CLIENT]
    assert calls > 0
    assert len(chats) == calls
    assert {s.context.trace_id for s in finished} == {root.context.trace_id}  # type: ignore[union-attr]


def test_a_run_its_caller_traced_is_not_traced_twice(
    settings: Settings, spans: InMemorySpanExporter
) -> None:
    config = _config(settings, "t-traced", correlation_id="corr-7")
    finished, calls = _validation_spans(spans, dict(config))
    [root] = [s for s in finished if s.parent is None]
    assert root.name == "multiagent.demo"  # the caller's name, tags and metadata
    assert (root.attributes or {})["multiagent.correlation_id"] == "corr-7"
    assert len([s for s in finished if s.kind is SpanKind.CLIENT]) == calls


def test_a_workflow_graph_run_is_not_traced_without_an_exporter(settings: Settings) -> None:
    configure_tracing(settings, environment=TracingEnvironment())
    try:
        graph = build_validation_graph().compile(name="validation")
        seen: list[Any] = []
        real = graph.__class__._traced

        def spy(self: Any, *args: Any) -> Any:
            seen.append(args)
            return real(self, *args)

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(graph.__class__, "_traced", spy)
            graph.invoke({"items": ["Water is wet."]}, context={"memory": "off"})
        assert seen == []
    finally:
        shutdown_tracing()


def test_a_workflow_graph_run_traced_to_langsmith_alone_is_named_and_tagged(
    settings: Settings,
) -> None:
    """A LangGraph Server (or notebook) run with LangSmith on and no OTLP exporter reads in
    LangSmith as a CLI run does: ``multiagent.<graph>``, its tags and metadata; a run its caller
    named keeps its name."""
    configure_tracing(settings, environment=TracingEnvironment(LANGSMITH_TRACING="true"))
    try:
        graph = build_validation_graph().compile(name="validation")
        collector = _Collector()
        config = {"configurable": {"thread_id": "t-ls"}, "callbacks": [collector]}
        graph.invoke({"items": ["Water is wet."]}, config, context={"memory": "off"})
        graph.invoke(
            {"items": ["Water is wet."]},
            _config(settings, "t-named", correlation_id="corr-9") | {"callbacks": [collector]},
            context={"memory": "off"},
        )
    finally:
        shutdown_tracing()
    server, named = collector.roots
    assert server.name == "multiagent.validation"
    assert {"multiagent", "workflow:validation", "profile:dev_balanced"} <= set(server.tags or [])
    metadata = server.metadata
    assert (metadata["workflow"], metadata["thread_id"]) == ("validation", "t-ls")
    assert metadata["correlation_id"]
    assert named.name == "multiagent.demo"  # the caller's own name and metadata win
    assert named.metadata["correlation_id"] == "corr-9"
