"""The LangGraph Server app's lifespan and routes, in process (``tests/server`` runs it in a real
``langgraph dev``): its start ties the process to the history of its home, its end writes what
was counted; its reads follow ``MULTIAGENT_METRICS_TOKEN``."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from multiagent._metrics import get_metrics
from multiagent.graphs.server_app import app
from multiagent.observability.history import MetricsHistory, reset_process_metrics
from multiagent.observability.tracing import active_tracing
from multiagent.policies import load_settings

TOKEN = "a-token-of-sixteen-chars"
LABELS = {"provider": "sim", "model": "gpt-4o-mini", "agent": "analyst", "outcome": "ok"}


@pytest.fixture(autouse=True)
def fresh_metrics() -> None:
    reset_process_metrics()


def test_the_lifespan_ties_the_process_to_its_home_and_persists_at_its_end(
    isolated_env: Path,
) -> None:
    with TestClient(app, base_url="http://127.0.0.1") as client:
        assert active_tracing() is not None
        get_metrics().inc("model_calls_total", labels=LABELS)
        summary = client.get("/multiagent/metrics/summary")
        assert summary.status_code == 200
        assert summary.json()["calls"]["ok"] == 1
        text = client.get("/multiagent/metrics").text
        assert 'multiagent_model_calls_total{agent="analyst"' in text
    assert active_tracing() is None  # flushed and shut down
    totals = MetricsHistory(load_settings()).totals(live=False)
    assert [s.value for s in totals if s.name == "multiagent_model_calls_total"] == [1.0]


def test_reads_need_the_token_when_one_is_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MULTIAGENT_METRICS_TOKEN", TOKEN)
    with TestClient(app, base_url="http://server.example") as client:
        assert client.get("/multiagent/metrics/summary").status_code == 401
        given = {"Authorization": f"Bearer {TOKEN}"}
        assert client.get("/multiagent/metrics/summary", headers=given).status_code == 200


def test_without_a_token_only_loopback_host_names_are_answered() -> None:
    with TestClient(app, base_url="http://server.example") as client:
        assert client.get("/multiagent/metrics").status_code == 403
    with TestClient(app, base_url="http://127.0.0.1:2024") as client:
        assert client.get("/multiagent/metrics").status_code == 200


def test_a_token_too_short_to_be_one_stops_the_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MULTIAGENT_METRICS_TOKEN", "short")
    with pytest.raises(Exception, match="at least 16 characters"), TestClient(app):
        pass
