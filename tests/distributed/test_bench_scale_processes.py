"""``bench scale --processes`` and ``--redis-overhead`` end to end, and LiteLLM's shared counters.

Real worker processes, a real simulator process and a real Redis on loopback. What is checked is
the report's shape and that its counts add up, never speed.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from typer.testing import CliRunner

from multiagent.bench.scale_litellm import LiteLLMCounterController, new_deployment_name
from multiagent.cli import app

pytestmark = pytest.mark.redis

PHASES = ["baseline", "capacity_cut", "latency_x4_errors", "recovery", "capacity_raise"]


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def _rate_limited() -> openai.RateLimitError:
    request = httpx.Request("POST", "http://127.0.0.1/v1/chat/completions")
    response = httpx.Response(429, request=request, headers={"retry-after": "1"})
    return openai.RateLimitError("rate limited", response=response, body=None)


@pytest.mark.slow
def test_processes_quick_run_reports_every_strategy_and_its_counts_add_up(
    tmp_path: Path, redis_url: str
) -> None:
    report = tmp_path / "BENCHMARKS.md"
    code, out, err = invoke(
        "bench", "scale", "--processes", "--quick", "--process-count", "2", "--loops", "4",
        "--modes", "advertised", "--report", str(report), "--json",
    )  # fmt: skip
    assert code == 0, err
    document = json.loads(out)
    runs = {run["name"]: run for run in document["runs"]}
    assert list(runs) == ["per_process", "litellm", "shared_adaptive"]
    shared = runs["shared_adaptive"]
    # the Redis-shared controller comes from another branch: it runs, or says why not
    assert shared["available"] or shared["reason"].startswith("not available")
    ran = [name for name, run in runs.items() if run["available"]]
    assert {"per_process", "litellm"} <= set(ran)
    by_run: dict[str, list[dict[str, Any]]] = {}
    for phase in document["phases"]:
        by_run.setdefault(str(phase["strategy"]), []).append(phase)
    assert list(by_run) == ran
    for name in ran:
        phases, run = by_run[name], runs[name]
        assert [p["phase"] for p in phases] == PHASES
        assert len(run["tasks_per_process"]) == 2
        # every task started in some phase; the phases' tasks are all the workers' tasks
        assert sum(int(p["tasks"]) for p in phases) == sum(run["tasks_per_process"])
        ok = sum(int(p["tasks"]) - int(p["tasks_failed"]) for p in phases)
        assert ok == sum(run["successful_tasks_per_process"])
        assert ok > 0
        # each successful task is one success at the server; loops cut at the end may add
        # replies the server finished but no task recorded (at most one per loop)
        successes = sum(int(p["successes"]) for p in phases)
        assert ok <= successes <= ok + 2 * 4
        for p in phases:
            refused = int(p["rate_limited"]) + int(p["server_errors"])
            assert int(p["successes"]) + refused <= int(p["attempts"])
        for shares in run["shares"]:
            assert len(shares) == 2
            assert sum(shares) == pytest.approx(1.0) or sum(shares) == 0
    text = report.read_text()
    assert "<!-- bench:scale-processes:start -->" in text
    assert "Command: `multiagent bench scale --processes" in text
    assert "| per_process | baseline |" in text
    assert "| litellm | capacity_raise |" in text
    if not shared["available"]:
        assert "`shared_adaptive`: not available" in text


def test_redis_overhead_times_the_reference_and_the_redis_path(
    tmp_path: Path, redis_url: str
) -> None:
    report = tmp_path / "BENCHMARKS.md"
    code, out, err = invoke(
        "bench", "scale", "--redis-overhead", "--calls", "50", "--report", str(report), "--json"
    )
    assert code == 0, err
    document = json.loads(out)
    variants = {v["variant"]: v for v in document["variants"]}
    assert "in_process" in variants
    assert "litellm_counters (stand-in)" in variants
    assert all(v["calls"] == 50 for v in variants.values())
    assert ("redis_adaptive" in variants) == (document["redis_adaptive_missing"] == "")
    assert "<!-- bench:scale-redis-overhead:start -->" in report.read_text()


def test_bench_scale_needs_exactly_one_measurement() -> None:
    code, _, err = invoke("bench", "scale", "--processes", "--redis-overhead", "--no-report")
    assert code == 2
    assert "--linear, --processes, --redis-overhead or --workers" in err


def test_bench_scale_processes_rejects_an_unknown_strategy(redis_url: str) -> None:
    code, _, err = invoke(
        "bench", "scale", "--processes", "--strategies", "per_process,fixed", "--no-report"
    )
    assert code == 2
    assert "unknown strategy fixed" in err
    assert "per_process, litellm, shared_adaptive" in err


def test_litellm_counters_and_cooldown_are_shared_between_controllers(redis_url: str) -> None:
    if time.time() % 60 > 50:  # counters are per wall-clock minute: stay inside one
        time.sleep(61 - time.time() % 60)
    deployment = new_deployment_name("test")
    first = LiteLLMCounterController(redis_url=redis_url, deployment=deployment, rpm=100, tpm=10**6)
    second = LiteLLMCounterController(
        redis_url=redis_url, deployment=deployment, rpm=100, tpm=10**6
    )
    try:
        for controller in (first, second, first):
            ticket = controller.acquire(tokens=30)
            controller.release(ticket)
        seen = second.state()
        assert seen.requests_this_minute == 3
        assert seen.tokens_this_minute == 90
        assert seen.cooldown_s == 0
        with first.slot(tokens=10) as passage:
            passage.failed(_rate_limited())
        # one process's 429 puts every process in the fixed cooldown
        assert 4.0 < second.state().cooldown_s <= 5.0
        assert second.state().tokens_this_minute == 90  # a refused request counts no tokens
    finally:
        first.close()
        second.close()
