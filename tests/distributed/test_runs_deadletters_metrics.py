"""Queued orchestration runs (threads in PostgreSQL), dead letters, queue gauges: real processes."""

from __future__ import annotations

import json
import signal
import time
import urllib.request
from pathlib import Path

import pytest
import redis

from multiagent.distributed.deadletter import dead_key
from multiagent.distributed.metrics import install_queue_metrics
from multiagent.distributed.queue import GROUP, batch_key, stream_key
from multiagent.distributed.worker import QueueWorker
from multiagent.nodes.context import build_context
from multiagent.observability.server import run_metrics_server
from multiagent.persistence.checkpointer import open_checkpointer
from multiagent.policies import load_settings
from tests.distributed._workers import FAST, Workers, cli, plan_done, wait_until

pytestmark = pytest.mark.redis


def _queue_run(task: str) -> str:
    queued = cli("run", task, "--queue", "q1", "--json")
    assert queued.exit_code == 0, queued.output
    return str(json.loads(queued.stdout)["run_id"])


def _state(run_id: str) -> str:
    return str(json.loads(cli("batch", "status", run_id, "--json").stdout)["state"])


def test_queued_run_without_the_shared_checkpointer_is_one_line_exit_2(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    missing = cli("run", "Plan a bakery opening", "--queue", "q1")
    assert missing.exit_code == 2
    assert "MULTIAGENT_CHECKPOINT_URL" in missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1
    approve = cli("run", "Plan a bakery", "--queue", "q1", "--approve")
    assert approve.exit_code == 2
    assert "--approve" in approve.stderr
    spaced = cli("run", "Plan a bakery", "--queue", "my queue")
    assert spaced.exit_code == 2
    assert "invalid queue name 'my queue'" in spaced.stderr
    assert client.dbsize() == 0  # nothing queued by any of them


@pytest.mark.postgres
@pytest.mark.slow
def test_a_queued_run_is_finished_by_a_worker_and_readable_once(
    workers: Workers, redis_url: str, postgres_url: str
) -> None:
    run_id = _queue_run("Plan a bakery opening")
    assert _state(run_id) == "queued"
    worker = workers.start("--queue", "q1", "--claim-idle", "2")
    wait_until(lambda: _state(run_id) == "completed")
    stats = workers.stop(worker)
    assert stats["runs"] == 1
    assert stats["resumed"] == 0
    results = json.loads(cli("batch", "results", run_id, "--json").stdout)
    assert results["thread_id"] == run_id
    assert results["workflow"] == "orchestration"
    assert results["output"]
    assert results["usage"]["calls"] >= 3  # planner, agents, synthesizer
    client = redis.Redis.from_url(redis_url)
    assert client.xlen(stream_key("q1")) == 0  # acknowledged and removed
    # the thread lives in the shared checkpointer, where `threads show` and any worker find it
    with open_checkpointer(load_settings()) as saver:
        found = saver.get_tuple({"configurable": {"thread_id": run_id}})
    assert found is not None
    assert found.checkpoint["channel_values"]["output"] == results["output"]


@pytest.mark.postgres
@pytest.mark.slow
def test_a_worker_killed_mid_run_is_resumed_by_another_from_the_checkpoint(
    workers: Workers, redis_url: str, postgres_url: str
) -> None:
    run_id = _queue_run("Plan a bakery opening")
    # slow calls: the agents are still working when the plan is on disk
    doomed = workers.start("--queue", "q1", "--claim-idle", "1", MULTIAGENT_SIM__TTFT_S="1.5")
    wait_until(lambda: plan_done(run_id))
    assert _state(run_id) == "running"
    doomed.send_signal(signal.SIGKILL)
    doomed.communicate()
    survivor = workers.start("--queue", "q1", "--claim-idle", "1")
    wait_until(lambda: _state(run_id) == "completed")
    stats = workers.stop(survivor)
    assert stats["reclaimed"] == 1
    assert stats["resumed"] == 1
    assert stats["runs"] == 1
    results = json.loads(cli("batch", "results", run_id, "--json").stdout)
    assert results["resumed"] is True
    planned = [step for step in results["timings"]["steps"] if step["node"] == "plan"]
    assert len(planned) == 1  # the planner finished before the kill and was not run again
    assert results["output"]
    client = redis.Redis.from_url(redis_url)
    assert int(client.xpending(stream_key("q1"), GROUP)["pending"]) == 0


@pytest.mark.slow
def test_an_entry_that_keeps_failing_is_dead_lettered_after_max_attempts(
    workers: Workers, redis_url: str, tmp_path: Path
) -> None:
    path = tmp_path / "items.jsonl"
    lines = [json.dumps({"id": f"i{n}", "text": f"Oven {n} bakes rye."}) for n in range(6)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    queued = cli("validate", "--batch", str(path), "--queue", "q1", "--validators", "2", "--json")
    batch_id = json.loads(queued.stdout)["batch_id"]
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    entries = client.xlen(stream_key("q1"))
    assert entries == 2  # 6 distinct texts, 4 per entry
    # the provider fails every call: a lasting outage
    worker = workers.start(
        "--queue", "q1", "--claim-idle", "0.5", "--max-attempts", "2",
        MULTIAGENT_SIM__SERVER_ERROR_RATE="1.0",
    )  # fmt: skip
    wait_until(lambda: client.xlen(dead_key("q1")) == entries)
    status = json.loads(cli("batch", "status", batch_id, "--json").stdout)
    time.sleep(1.5)  # three claim-idle periods: a retry loop would have taken the entries again
    stats = workers.stop(worker)
    assert stats["failures"] == entries * 2  # each entry tried exactly max-attempts times
    assert stats["dead_letters"] == entries
    assert status["state"] == "failed"
    assert status["dead_letters"] == entries
    assert status["dead_items"] == 6
    assert status["failures"] == entries * 2
    assert client.xlen(stream_key("q1")) == 0
    letters = client.xrange(dead_key("q1"))
    assert [int(fields["attempts"]) for _, fields in letters] == [2, 2]
    assert "server" in letters[0][1]["error"].lower() or letters[0][1]["error"]
    results = json.loads(cli("batch", "results", batch_id, "--json").stdout)
    assert results["dead_lettered"] == [f"i{n}" for n in range(6)]
    assert client.hlen(batch_key(batch_id, "records")) == 0


def test_queue_gauges_are_in_metrics_with_depth_throughput_and_dead_letters(
    redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in FAST.items():
        monkeypatch.setenv(name, value)
    path = tmp_path / "items.jsonl"
    path.write_text(
        "".join(json.dumps({"id": f"i{n}", "text": f"Claim {n}."}) + "\n" for n in range(10)),
        encoding="utf-8",
    )
    queued = cli("validate", "--batch", str(path), "--queue", "q1", "--validators", "2")
    assert queued.exit_code == 0
    settings = load_settings()
    uninstall = install_queue_metrics(settings)
    try:
        with run_metrics_server(settings) as url:
            before = urllib.request.urlopen(f"{url}/metrics", timeout=10).read().decode()
            assert 'multiagent_queue_depth{queue="q1"} 3' in before  # 10 texts, 4 per entry
            assert 'multiagent_queue_waiting{queue="q1"} 3' in before
            assert 'multiagent_queue_completed{queue="q1"} 0' in before
            client = redis.Redis.from_url(redis_url, decode_responses=True)
            worker = QueueWorker(client, queue="q1", context=build_context(settings))
            stats = worker.run(idle_exit_s=0.5)
            assert stats.stored == 10
            after = urllib.request.urlopen(f"{url}/metrics", timeout=10).read().decode()
    finally:
        uninstall()
    assert 'multiagent_queue_depth{queue="q1"} 0' in after
    assert 'multiagent_queue_pending{queue="q1"} 0' in after
    assert 'multiagent_queue_completed{queue="q1"} 10' in after
    assert 'multiagent_queue_dead_letters{queue="q1"} 0' in after
    throughput = [line for line in after.splitlines() if "queue_throughput_per_s" in line]
    assert throughput
    assert float(throughput[-1].split()[-1]) == pytest.approx(10 / 60)
    shown = json.loads(cli("metrics", "show", "--json").stdout)
    assert shown["queues"]["q1"]["completed"] == 10
