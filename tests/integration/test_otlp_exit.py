"""A CLI run's telemetry at exit: a healthy OTLP collector on 127.0.0.1 receives every span and
the final metrics; a collector that refuses connections or never answers costs the run a few
seconds and one line on stderr, not the exporters' retries; a bad metrics protocol is refused.

No test measures time: the exporters' timeout is 600 s, so without the bounded exit the run
would outlast the subprocess timeout and fail by it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from contextlib import AbstractContextManager
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from tests._loopback_http import JsonHandler, refusing, serving, silent
from tests.integration._langsmith_capture import langsmith_capture

pytestmark = pytest.mark.slow

_TIMEOUT_S = 120  # the bound: far below the exporters' 600 s


def _run(endpoint: str, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_EXPORTER_OTLP_TIMEOUT": "600",
    }
    return subprocess.run(
        [sys.executable, "-m", "multiagent", "run", "Compare two launch plans", "--no-stream",
         "--memory", "off", *extra],
        env=env, capture_output=True, text=True, timeout=_TIMEOUT_S, check=False,
    )  # fmt: skip


class _Collector(JsonHandler):
    """An OTLP/HTTP collector keeping every request body by path."""

    bodies: dict[str, list[bytes]]

    def do_POST(self) -> None:
        self.bodies.setdefault(self.path, []).append(self.read_body())
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()


def test_a_healthy_collector_receives_every_span_and_the_final_metrics() -> None:
    bodies: dict[str, list[bytes]] = {}
    handler = type("Collector", (_Collector,), {"bodies": bodies})
    with serving(ThreadingHTTPServer(("127.0.0.1", 0), handler)) as url:
        done = _run(url, "--json")
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    spans = [
        span
        for body in bodies["/v1/traces"]
        for resource in ExportTraceServiceRequest.FromString(body).resource_spans
        for scope in resource.scope_spans
        for span in scope.spans
    ]
    calls = json.loads(done.stdout)["usage"]["calls"]
    assert [s.name for s in spans].count("multiagent.orchestration") == 1
    assert len([s for s in spans if s.kind == Span.SPAN_KIND_CLIENT]) == calls > 0
    assert len({s.trace_id for s in spans}) == 1
    names = {
        metric.name
        for body in bodies["/v1/metrics"]
        for resource in ExportMetricsServiceRequest.FromString(body).resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
    }
    assert "multiagent_model_calls_total" in names


@pytest.mark.parametrize("collector", [refusing, silent], ids=["refused", "silent"])
def test_a_collector_that_is_down_costs_one_line_not_the_exporters_retries(
    collector: Callable[[], AbstractContextManager[str]],
) -> None:
    with collector() as url:
        done = _run(url)
    assert done.returncode == 0, done.stderr
    (line,) = done.stderr.splitlines()
    assert line.startswith("multiagent: OTLP telemetry not delivered (the collector is down")
    assert "waited at most 3 s at exit" in line
    assert f"spans to {url}/v1/traces" in line
    assert f"the final metrics to {url}/v1/metrics" in line


def test_a_bad_metrics_protocol_is_refused_in_one_line() -> None:
    env = {
        **os.environ,
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9",
        "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL": "thrift",
    }
    done = subprocess.run(
        [sys.executable, "-m", "multiagent", "metrics", "show"],
        env=env, capture_output=True, text=True, timeout=_TIMEOUT_S, check=False,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "error: unknown OTLP protocol 'thrift' (from OTEL_EXPORTER_OTLP_METRICS_PROTOCOL); "
        "valid: http/protobuf, grpc"
    ]


def test_a_run_stopped_by_sigterm_ends_and_delivers_every_span_and_langsmith_run(
    isolated_env: Path,
) -> None:
    """SIGTERM stops a run as Ctrl-C does: the spans and LangSmith runs of the stopped steps end
    (as errors) and reach the collector and LangSmith; the command exits 143 (128 + SIGTERM).
    Killed by SIGTERM's default action, the process sent no span and left its runs open."""
    bodies: dict[str, list[bytes]] = {}
    handler = type("Collector", (_Collector,), {"bodies": bodies})
    with (
        serving(ThreadingHTTPServer(("127.0.0.1", 0), handler)) as url,
        langsmith_capture() as (langsmith, captured),
    ):
        env = {
            **os.environ,
            "OTEL_EXPORTER_OTLP_ENDPOINT": url,
            "LANGSMITH_TRACING": "true",
            "LANGSMITH_ENDPOINT": langsmith,
            "LANGSMITH_API_KEY": "dummy",
            "PYTHONUNBUFFERED": "1",
            "MULTIAGENT_SIM__TTFT_S": "30",  # each step waits for its first token until stopped
        }
        process = subprocess.Popen(
            [sys.executable, "-m", "multiagent", "run", "Plan a product launch", "--memory",
             "off", "--agents", "researcher,critic", "--thread", "t-term"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert process.stdout is not None
        for line in process.stdout:
            if "▸ plan" in line:  # the planner's call is waiting at the provider
                process.send_signal(signal.SIGTERM)
                break
        out, err = process.communicate(timeout=_TIMEOUT_S)
        runs = captured.all()
    assert process.returncode == 143, err
    assert "interrupted: stopped by SIGTERM" in out
    # the notice names what stopped it, and what stops it now
    assert "Stopping on SIGTERM: no new model call starts; SIGTERM again to stop now. " in err
    spans = [
        span
        for body in bodies["/v1/traces"]
        for resource in ExportTraceServiceRequest.FromString(body).resource_spans
        for scope in resource.scope_spans
        for span in scope.spans
    ]
    assert sorted(s.name for s in spans) == ["chat gpt-4o-mini", "multiagent.orchestration", "plan"]
    assert all(s.status.code == Status.STATUS_CODE_ERROR for s in spans)
    assert len({s.trace_id for s in spans}) == 1
    names = sorted(r["name"] for r in runs)
    assert names == ["SimulatedChatModel", "multiagent.orchestration", "plan"]
    assert all(r.get("end_time") and "StopRequested" in r.get("error", "") for r in runs)
