"""A LangGraph Server's runs in the project's observability, as a CLI run's are.

- Its model calls reach the metrics history of its ``MULTIAGENT_HOME``: what ``multiagent
  metrics show --json`` reads there counts them, once the server stops (SIGTERM, as the fixture
  stops it) or its periodic persist wrote them; the calls of a run still going at SIGTERM too
  (the server cancels it after the app's lifespan ended).
- With ``OTEL_EXPORTER_OTLP_ENDPOINT`` set, each run is one trace exported over OTLP/HTTP, with
  the CLI's span names and attributes.
- ``/multiagent/metrics[/summary]`` serve the numbers beside the server's own routes.
- Its runs show on the dashboard's live runs while they run, and among the finished after.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import aclosing
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request, Response
from langgraph_sdk import get_client
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from multiagent._serve import serve_in_thread
from multiagent.dashboard.data import live_runs
from multiagent.policies import load_settings
from tests.server.conftest import ROOT, langgraph_dev, running_langgraph_dev

pytestmark = [pytest.mark.server, pytest.mark.slow]

TASK = {"task": "Plan a community vegetable garden"}
#: How long a periodic persist or an OTLP batch may take to show on a busy machine.
WAIT_S = 120.0
#: The simulated provider's wait before each token: an agent's answer (tens of tokens) is still
#: streaming when the server gets SIGTERM.
TOKEN_LATENCY_S = 1.0


async def _run_orchestration(url: str) -> tuple[str, str, dict[str, Any]]:
    """One orchestration run to its end: the thread id, the run id and the final state."""
    client = get_client(url=url)
    thread_id = (await client.threads.create())["thread_id"]
    state = await client.runs.wait(thread_id, "orchestration", input=TASK,
                                   context={"memory": "off"})  # fmt: skip
    assert isinstance(state, dict)
    [run] = await client.runs.list(thread_id)
    assert run["status"] == "success"
    return thread_id, run["run_id"], state


def _usage_of(states: list[dict[str, Any]]) -> dict[str, int]:
    """The runs' own accounts of their model calls (each node's usage entries)."""
    entries = [entry for state in states for entry in state["usage"]]
    return {
        "calls": sum(e["calls"] for e in entries),
        "cached": sum(e["cache_hits"] for e in entries),
        "errors": sum(e["errors"] for e in entries),
        "input_tokens": sum(e["input_tokens"] for e in entries),
    }


def _metrics_show(home: Path) -> dict[str, Any]:
    """``multiagent metrics show --json`` on ``home``, in a process of its own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MULTIAGENT_")}
    env.update(MULTIAGENT_HOME=str(home), PYTHONPATH=str(ROOT))
    done = subprocess.run(
        [sys.executable, "-m", "multiagent", "metrics", "show", "--json"],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    shown: dict[str, Any] = json.loads(done.stdout)
    return shown


def _assert_counts(shown: dict[str, Any], usage: dict[str, int]) -> None:
    calls = shown["calls"]
    assert usage["calls"] > 0
    assert calls["total"] == usage["calls"]
    assert calls["cached"] == usage["cached"]
    assert calls["error"] == usage["errors"] == 0
    assert calls["ok"] == usage["calls"] - usage["cached"]
    assert shown["tokens"]["input"] == usage["input_tokens"]


async def test_server_calls_reach_the_history_when_the_server_stops(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    with running_langgraph_dev(tmp_path_factory, MULTIAGENT_HOME=str(home)) as url:
        states = [(await _run_orchestration(url))[2] for _ in range(2)]
        # the server's own summary counts them too (what it has not persisted yet included)
        live = httpx.get(f"{url}/multiagent/metrics/summary", timeout=30).json()
        prometheus = httpx.get(f"{url}/multiagent/metrics", timeout=30)
        own = httpx.get(f"{url}/metrics", timeout=30)  # LangGraph Server's, still its own
    usage = _usage_of(states)
    # the default export interval is 5 minutes: only the shutdown (a SIGTERM) wrote these
    _assert_counts(_metrics_show(home), usage)
    _assert_counts(live, usage)
    assert prometheus.status_code == 200
    assert "multiagent_model_calls_total{" in prometheus.text
    assert own.status_code == 200
    assert "multiagent_model_calls_total" not in own.text


async def test_server_calls_reach_the_history_while_it_runs(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    env = {"MULTIAGENT_HOME": str(home), "MULTIAGENT_METRICS_EXPORT_S": "0.5"}
    with running_langgraph_dev(tmp_path_factory, **env) as url:
        usage = _usage_of([(await _run_orchestration(url))[2]])
        deadline = time.monotonic() + WAIT_S
        shown = _metrics_show(home)
        while shown["calls"]["total"] < usage["calls"] and time.monotonic() < deadline:
            time.sleep(0.5)
            shown = _metrics_show(home)
        _assert_counts(shown, usage)


async def _until_every_step_streams(url: str) -> tuple[int, set[str]]:
    """Stream an orchestration run until each planned step's model call streams its answer: the
    calls that ended (the plan's, from its node's usage) and the ids of those still going."""
    client = get_client(url=url)
    thread_id = (await client.threads.create())["thread_id"]
    ended, steps, going = 0, None, set()
    deadline = time.monotonic() + WAIT_S
    stream = client.runs.stream(
        thread_id, "orchestration", input=TASK, context={"memory": "off"},
        stream_mode=["updates", "messages-tuple"], on_disconnect="continue",
    )  # fmt: skip
    async with aclosing(stream):  # closed at once: uvicorn's shutdown would wait for it
        async for part in stream:
            assert time.monotonic() < deadline, "the planned steps never all streamed"
            if part.event == "updates":
                for node, update in part.data.items():
                    assert node == "plan", f"{node} ended before the server was stopped"
                    ended += sum(entry["calls"] for entry in update["usage"])
                    steps = len(update["plan"])
            elif part.event == "messages":
                chunk, metadata = part.data
                if metadata["langgraph_node"] == "work":
                    going.add(chunk["id"])
            if steps is not None and len(going) == steps:
                return ended, going
    pytest.fail("the run ended before its steps all streamed")


async def test_calls_of_a_run_going_at_sigterm_reach_the_history(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    env = {"MULTIAGENT_HOME": str(home), "MULTIAGENT_SIM__TOKEN_LATENCY_S": str(TOKEN_LATENCY_S)}
    with langgraph_dev(tmp_path_factory, **env) as server:
        ended, going = await _until_every_step_streams(server.url)
        # the stream is closed and the run goes on (on_disconnect="continue")
        assert server.terminate() == -signal.SIGTERM  # as a deployment stops it
    assert ended >= 1
    assert len(going) >= 2
    calls = _metrics_show(home)["calls"]
    assert calls["ok"] == ended
    assert calls["cancelled"] == len(going)  # cancelled by the server after the app's end
    assert calls["total"] == ended + len(going)
    runs = live_runs(load_settings(home=home))
    assert runs["running"] == []
    assert [r["status"] for r in runs["finished"]] == ["interrupted"]


def _live_threads(home: Path) -> dict[str, list[tuple[str, str]]]:
    """The dashboard's live runs of ``home``: (thread, status) of the running and finished."""
    runs = live_runs(load_settings(home=home))
    return {k: [(r["thread_id"], r["status"]) for r in runs[k]] for k in ("running", "finished")}


async def test_a_server_run_shows_on_the_live_runs_while_it_runs(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    env = {"MULTIAGENT_HOME": str(home), "MULTIAGENT_SIM__TOKEN_LATENCY_S": "0.05"}
    with running_langgraph_dev(tmp_path_factory, **env) as url:
        client = get_client(url=url)
        thread_id = (await client.threads.create())["thread_id"]
        run = await client.runs.create(
            thread_id, "orchestration", input=TASK, context={"memory": "off"}
        )
        deadline = time.monotonic() + WAIT_S
        seen: dict[str, list[tuple[str, str]]] = {"running": []}
        while (thread_id, "running") not in seen["running"]:
            assert (await client.runs.get(thread_id, run["run_id"]))["status"] in {
                "pending",
                "running",
            }, "the run ended before it was seen running"
            assert time.monotonic() < deadline, "the run never showed as running"
            seen = _live_threads(home)
            await asyncio.sleep(0.05)
        state = await client.runs.join(thread_id, run["run_id"])
        assert (await client.runs.get(thread_id, run["run_id"]))["status"] == "success"
        # its end is written before the server calls the run a success
        assert _live_threads(home) == {"running": [], "finished": [(thread_id, "completed")]}
    [row] = live_runs(load_settings(home=home))["finished"]
    assert row["workflow"] == "orchestration"
    assert row["tokens_in"] == _usage_of([state])["input_tokens"]


@pytest.fixture
def otlp_spans() -> Iterator[tuple[str, list[Span]]]:
    """An OTLP/HTTP receiver on loopback: its URL and the spans it received."""
    spans: list[Span] = []
    receiver = FastAPI()

    @receiver.post("/v1/traces")
    async def traces(request: Request) -> Response:
        exported = ExportTraceServiceRequest.FromString(await request.body())
        for resource_spans in exported.resource_spans:
            for scope in resource_spans.scope_spans:
                spans.extend(scope.spans)
        return Response(b"", media_type="application/x-protobuf")

    @receiver.post("/v1/metrics")
    async def metrics() -> Response:
        return Response(b"", media_type="application/x-protobuf")

    with serve_in_thread(receiver, host="127.0.0.1", port=0, what="otlp") as url:
        yield url, spans


def _attributes(span: Span) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for attr in span.attributes:
        value = attr.value
        kind = value.WhichOneof("value")
        out[attr.key] = getattr(value, kind) if kind != "array_value" else value.array_value
    return out


async def test_a_server_run_is_one_trace_with_the_cli_spans(
    tmp_path_factory: pytest.TempPathFactory, otlp_spans: tuple[str, list[Span]]
) -> None:
    endpoint, spans = otlp_spans
    with running_langgraph_dev(tmp_path_factory, OTEL_EXPORTER_OTLP_ENDPOINT=endpoint) as url:
        thread_id, run_id, state = await _run_orchestration(url)
        deadline = time.monotonic() + WAIT_S
        calls = _usage_of([state])["calls"]
        while time.monotonic() < deadline:
            if sum(s.name.startswith("chat ") for s in spans) >= calls and any(
                s.name == "multiagent.orchestration" for s in spans
            ):
                break
            time.sleep(0.5)
    [root] = [s for s in spans if s.name == "multiagent.orchestration"]
    assert not root.parent_span_id
    attrs = _attributes(root)
    assert attrs["multiagent.workflow"] == "orchestration"
    assert attrs["multiagent.profile"] == "dev_balanced"
    assert attrs["multiagent.policy"] == "balanced"
    assert attrs["multiagent.provider"] == "sim"
    assert attrs["multiagent.thread_id"] == thread_id
    assert attrs["multiagent.correlation_id"] == run_id
    run_spans = [s for s in spans if s.trace_id == root.trace_id]
    assert len(run_spans) == len(spans)  # one run, one trace
    names = {s.name for s in run_spans}
    assert {"plan", "synthesize"} <= names
    chats = [s for s in run_spans if s.name.startswith("chat ")]
    assert len(chats) == calls
    for chat in chats:
        chat_attrs = _attributes(chat)
        assert chat_attrs["multiagent.thread_id"] == thread_id
        assert chat_attrs["multiagent.agent"]
        assert chat_attrs["gen_ai.usage.input_tokens"] > 0
