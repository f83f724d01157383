"""The metrics server over real HTTP on 127.0.0.1, and the ``metrics`` commands."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest
from langchain_core.messages import AIMessage
from langchain_core.outputs import ChatGeneration
from typer.testing import CliRunner

from multiagent._metrics import MetricsStore
from multiagent.commands import _shared as shared
from multiagent.errors import UsageError
from multiagent.models.analysis_cache import open_analysis_cache
from multiagent.models.completion_cache import (
    CompletionCache,
    completion_cache_dir,
    open_completion_cache,
)
from multiagent.observability.history import persist_metrics
from multiagent.observability.server import run_metrics_server
from multiagent.policies import Settings, load_settings

runner = CliRunner()
_LABEL = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\["\\n])*"'
SAMPLE = re.compile(
    rf"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{{({_LABEL}(?:,{_LABEL})*)\}})? "
    r"(NaN|[+-]Inf|-?[0-9.]+(?:e[+-]?[0-9]+)?)$"
)
TYPE = re.compile(r"^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (counter|gauge|summary)$")
CALL = {"provider": "sim", "model": "gpt-4o-mini", "agent": "analyst", "outcome": "ok"}


def parse_exposition(text: str) -> tuple[dict[str, str], list[tuple[str, str, float]]]:
    """Every line is a HELP, a TYPE or a sample ``name{labels} value``; return types, samples."""
    types: dict[str, str] = {}
    samples: list[tuple[str, str, float]] = []
    for line in text.splitlines():
        if line.startswith("# HELP "):
            continue
        typed = TYPE.match(line)
        if typed:
            types[typed[1]] = typed[2]
            continue
        sample = SAMPLE.match(line)
        assert sample, f"not a sample line: {line!r}"
        samples.append((sample[1], sample[2] or "", float(sample[3])))
    return types, samples


def _cli(*args: str) -> object:
    from multiagent.cli import app

    return runner.invoke(app, list(args))


@pytest.fixture
def settings() -> Settings:
    return load_settings()


@pytest.fixture
def store() -> MetricsStore:
    return MetricsStore()


@pytest.fixture
def quiet_process(tmp_path: Path) -> None:
    """The CLI runs in this process: move what earlier tests counted into the process's store
    out of the way (into another home), so the command reports this test's history only."""
    persist_metrics(load_settings(home=tmp_path / "elsewhere"))


@pytest.fixture
def url(settings: Settings, store: MetricsStore) -> Iterator[str]:
    with run_metrics_server(settings, store=store) as base:
        yield base


def _calls(store: MetricsStore, n: int) -> None:
    for _ in range(n):
        store.inc("model_calls_total", labels=CALL)
        store.inc(
            "model_tokens_total", value=7, labels={"model": "gpt-4o-mini", "direction": "input"}
        )


def test_healthz_and_openapi(url: str) -> None:
    health = httpx2.get(f"{url}/healthz")
    assert health.status_code == 200
    assert health.json()["status"] == "ok"
    paths = httpx2.get(f"{url}/openapi.json").json()["paths"]
    for route in ("/healthz", "/metrics", "/metrics/summary", "/metrics/history", "/metrics/cache"):
        assert route in paths
    hours = paths["/metrics/history"]["get"]["parameters"][0]
    assert hours["name"] == "hours"
    assert (hours["schema"]["minimum"], hours["schema"]["maximum"]) == (1, 24)


def test_metrics_counts_persisted_and_live_once(
    url: str, settings: Settings, store: MetricsStore
) -> None:
    _calls(store, 3)
    persist_metrics(settings, store=store)
    other = MetricsStore()  # another run of the same home, already persisted
    _calls(other, 4)
    persist_metrics(settings, store=other)
    _calls(store, 2)  # this process, not persisted yet
    store.set_gauge("backpressure_in_flight", value=1, labels={"model": "gpt-4o-mini"})
    response = httpx2.get(f"{url}/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    types, samples = parse_exposition(response.text)
    calls = [v for n, _, v in samples if n == "multiagent_model_calls_total"]
    assert calls == [9]
    assert types["multiagent_backpressure_in_flight"] == "gauge"
    assert types["multiagent_cache_entries"] == "gauge"
    persist_metrics(settings, store=store)  # the live part moves into the history: same total
    _, again = parse_exposition(httpx2.get(f"{url}/metrics").text)
    assert [v for n, _, v in again if n == "multiagent_model_calls_total"] == [9]


def test_summary_reports_calls_tokens_and_where_it_read(
    url: str, settings: Settings, store: MetricsStore
) -> None:
    _calls(store, 2)
    persist_metrics(settings, store=store)
    summary = httpx2.get(f"{url}/metrics/summary").json()
    assert summary["calls"]["total"] == 2
    assert summary["tokens"]["input"] == 14
    assert summary["models"]["gpt-4o-mini"]["calls"]["ok"] == 2
    assert summary["source"]["last_persist"]["pid"] == os.getpid()
    assert summary["source"]["stored_buckets"] == 1


@pytest.mark.parametrize("hours", ["0", "25", "-3", "two"])
def test_history_outside_1_to_24_hours_is_422(url: str, hours: str) -> None:
    response = httpx2.get(f"{url}/metrics/history", params={"hours": hours})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["query", "hours"]


def test_history_gives_every_5_minute_point(
    url: str, settings: Settings, store: MetricsStore
) -> None:
    _calls(store, 5)
    persist_metrics(settings, store=store)
    day = httpx2.get(f"{url}/metrics/history", params={"hours": 24}).json()
    assert day["count"] == len(day["points"]) == 288
    assert day["points"][-1]["calls"] == 5
    assert sum(p["calls"] for p in day["points"]) == 5
    default = httpx2.get(f"{url}/metrics/history").json()
    assert default["hours"] == 1
    assert default["count"] == 12


def _generation(text: str) -> list[ChatGeneration]:
    return [ChatGeneration(message=AIMessage(content=text))]


def test_cache_analytics_read_the_caches_on_disk(
    url: str, settings: Settings, tmp_path: Path
) -> None:
    empty = httpx2.get(f"{url}/metrics/cache").json()
    assert empty["completion"]["present"] is False
    assert empty["completion"]["entries"] == 0
    cache = open_completion_cache(settings.home, ttl_s=3600)
    cache.update("prompt one", "model-a", _generation("one"))
    assert cache.lookup("prompt one", "model-a") is not None
    assert cache.lookup("prompt two", "model-a") is None
    assert cache.lookup("prompt one", "model-a") is not None
    short = CompletionCache(completion_cache_dir(settings.home).resolve(), ttl_s=0.01)
    short.update("brief", "model-a", _generation("gone soon"))
    time.sleep(0.05)
    analysis = open_analysis_cache(settings.home, ttl_s=3600)
    for content in ("a", "a", "b", "a"):
        analysis.get_or_compute("verdict", content, lambda: {"ok": True})
    cache.flush()  # answers are written behind: on disk for other readers once written
    short.flush()
    report = httpx2.get(f"{url}/metrics/cache").json()
    completion = report["completion"]
    assert (completion["hits"], completion["misses"]) == (2, 1)
    assert completion["hit_rate"] == pytest.approx(2 / 3, abs=1e-6)
    assert (completion["entries"], completion["expired_entries"]) == (2, 1)
    assert completion["size_bytes"] > 0
    assert report["analysis"]["hits"] == 2
    assert report["analysis"]["misses"] == 2
    assert report["analysis"]["kinds"]["verdict"]["hit_rate"] == 0.5
    assert report["analysis"]["entries"] == 2
    _, samples = parse_exposition(httpx2.get(f"{url}/metrics").text)
    entries = {lb: v for n, lb, v in samples if n == "multiagent_cache_entries"}
    assert entries == {'cache="analysis"': 2, 'cache="completion"': 2}
    short.close()


def test_a_taken_port_is_a_usage_error(settings: Settings, url: str) -> None:
    port = int(url.rsplit(":", 1)[1])
    with (
        pytest.raises(UsageError, match=f"127.0.0.1:{port}"),
        run_metrics_server(settings, port=port),
    ):
        pass


@pytest.mark.usefixtures("quiet_process")
def test_show_json_is_one_document_of_the_history(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shared.console, "width", 160)
    store = MetricsStore()
    _calls(store, 3)
    persist_metrics(settings, store=store)
    result = _cli("metrics", "show", "--json")
    assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
    document = json.loads(result.stdout)  # type: ignore[attr-defined]
    assert document["calls"]["total"] == 3
    table = _cli("metrics", "show")
    assert table.exit_code == 0  # type: ignore[attr-defined]
    assert "gpt-4o-mini" in table.stdout  # type: ignore[attr-defined]


@pytest.mark.usefixtures("quiet_process")
def test_history_command_json_and_bad_hours(settings: Settings) -> None:
    store = MetricsStore()
    _calls(store, 1)
    persist_metrics(settings, store=store)
    result = _cli("metrics", "history", "--hours", "2", "--json")
    document = json.loads(result.stdout)  # type: ignore[attr-defined]
    assert len(document["points"]) == 24
    assert document["points"][-1]["calls"] == 1
    for hours in ("25", "0", "-1"):  # one rule for every bad value, naming the option
        bad = _cli("metrics", "history", "--hours", hours)
        assert bad.exit_code == 2  # type: ignore[attr-defined]
        expected = f"error: --hours must be between 1 and 24, got {hours}"
        assert bad.stderr.strip() == expected  # type: ignore[attr-defined]
        assert bad.stdout == ""  # type: ignore[attr-defined]


def test_serve_runs_in_the_foreground_until_sigterm(isolated_env: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "multiagent", "metrics", "serve", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline().strip()
        assert first.startswith("multiagent metrics listening on http://127.0.0.1:"), first
        base = first.rsplit(" ", 1)[1]
        assert httpx2.get(f"{base}/healthz").json()["home"] == str(isolated_env)
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=15)
    assert code == 0, process.stderr.read() if process.stderr else ""
