"""Schemathesis over ``/openapi.json`` of a live server on 127.0.0.1: no input gives a 5xx."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings

from multiagent.observability.server import run_metrics_server
from multiagent.policies import load_settings

schemathesis = pytest.importorskip("schemathesis")
pytestmark = pytest.mark.slow
TOKEN = "a-fuzzing-token-long-enough"


def test_no_generated_request_makes_the_server_fail(tmp_path: Path) -> None:
    with run_metrics_server(load_settings(home=tmp_path / "home"), token=TOKEN) as url:
        schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
        checked = []
        for found in schema.get_all_operations():
            operation = found.ok()
            if operation.path == "/api/stream":  # endless by design; read by the browser test
                continue

            @given(case=operation.as_strategy())
            @settings(max_examples=25, deadline=None, database=None,
                      suppress_health_check=list(HealthCheck))  # fmt: skip
            def call(case: Any) -> None:
                reply = case.call(headers={"Authorization": f"Bearer {TOKEN}"})
                assert reply.status_code < 500, (case.method, case.path, reply.text[:300])

            call()
            checked.append(f"{operation.method.upper()} {operation.path}")
    assert "GET /api/threads/{thread_id}" in checked
    assert "POST /api/threads/{thread_id}/{action}" in checked
    assert "GET /metrics/history" in checked
