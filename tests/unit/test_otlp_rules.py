"""The OTLP rules shared by spans and metrics: one protocol rule, one exit wait."""

from __future__ import annotations

import pytest

from multiagent._metrics_readers import otlp_reader
from multiagent._otlp import EXIT_WAIT_S, exit_wait_s, otlp_endpoint, otlp_protocol
from multiagent.errors import ConfigError
from multiagent.observability.tracing import TracingEnvironment, configure_tracing
from multiagent.policies import load_settings


def test_the_protocol_is_the_first_set_variable_and_must_be_known() -> None:
    assert otlp_protocol(("A", None), ("B", "")) == "http/protobuf"
    assert otlp_protocol(("A", " GRPC "), ("B", "thrift")) == "grpc"
    assert otlp_protocol(("A", ""), ("B", "http/protobuf")) == "http/protobuf"
    with pytest.raises(ConfigError) as refused:
        otlp_protocol(("A", None), ("B", "http/json"))
    assert str(refused.value) == (
        "unknown OTLP protocol 'http/json' (from B); valid: http/protobuf, grpc"
    )


def test_metrics_refuse_a_protocol_they_would_have_sent_over_http(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "thrift")
    with pytest.raises(ConfigError, match=r"'thrift' \(from OTEL_EXPORTER_OTLP_PROTOCOL\)"):
        otlp_reader()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "zipkin")
    with pytest.raises(ConfigError, match=r"'zipkin' \(from OTEL_EXPORTER_OTLP_METRICS_PROTOCOL\)"):
        otlp_reader()
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "none")
    assert otlp_reader() is None  # nothing exported, nothing to refuse


def test_traces_name_the_variable_the_bad_protocol_came_from() -> None:
    bad = TracingEnvironment(
        OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:9",
        OTEL_EXPORTER_OTLP_PROTOCOL="grpc",
        OTEL_EXPORTER_OTLP_TRACES_PROTOCOL="thrift",
    )
    with pytest.raises(ConfigError, match=r"from OTEL_EXPORTER_OTLP_TRACES_PROTOCOL\)"):
        configure_tracing(load_settings(), environment=bad)


def test_endpoints_follow_the_opentelemetry_variables() -> None:
    general = "http://collector:4318/"
    assert otlp_endpoint("http/protobuf", specific=None, general=general, path="/v1/metrics") == (
        "http://collector:4318/v1/metrics"
    )
    assert otlp_endpoint("grpc", specific=None, general="collector:4317", path="/v1/traces") == (
        "collector:4317"
    )
    assert otlp_endpoint("http/protobuf", specific="http://x/m", general=general, path="/p") == (
        "http://x/m"
    )


def test_the_exit_wait_is_never_longer_than_the_exporters_timeout() -> None:
    assert exit_wait_s(None, None) == EXIT_WAIT_S == 3.0
    assert exit_wait_s(None, "600") == EXIT_WAIT_S
    assert exit_wait_s("0.5", "600") == 0.5
    assert exit_wait_s("", "1") == 1.0
    assert exit_wait_s("soon", "1") == EXIT_WAIT_S  # the exporter's default: 10 s
    assert exit_wait_s("nan", None) == exit_wait_s("-1", None) == EXIT_WAIT_S
