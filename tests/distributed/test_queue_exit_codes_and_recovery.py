"""Queued batches and workers on a real Redis: `--wait`'s exit code, `--thread` as the batch id,
options refused with `--queue`, a worker stopped twice mid-run, a Redis that lost its data, a
worker's stacks on SIGUSR1."""

from __future__ import annotations

import json
import signal
import threading
from pathlib import Path
from typing import Any

import pytest
import redis

from multiagent.commands.batch import batch_exit_code
from multiagent.distributed.queue import GROUP, batch_key, stream_key
from multiagent.distributed.runs import enqueue_run
from multiagent.distributed.worker import QueueWorker
from multiagent.errors import UsageError
from multiagent.nodes.context import build_context
from multiagent.policies import load_settings
from tests.distributed._workers import FAST, Workers, batch_file, cli, plan_done, wait_until

pytestmark = pytest.mark.redis


def test_the_exit_code_of_a_queued_batch_follows_its_results_as_a_local_batch() -> None:
    def document(state: str, *statuses: str) -> dict[str, Any]:
        return {"state": state, "results": [{"status": s} for s in statuses]}

    assert batch_exit_code(document("completed", "passed", "passed")) == 0
    assert batch_exit_code(document("completed", "passed", "inconclusive")) == 4
    assert batch_exit_code(document("completed", "inconclusive", "failed")) == 3
    assert batch_exit_code(document("failed", "failed")) == 1  # dead letters come first
    assert batch_exit_code(document("budget_exceeded", "passed")) == 1


@pytest.mark.slow
def test_wait_exits_with_the_local_batchs_code_when_consensus_fails(
    workers: Workers, redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in FAST.items():
        monkeypatch.setenv(name, value)
    path = batch_file(tmp_path, 12)
    local = cli("validate", "--batch", str(path), "--validators", "2", "--json")
    assert local.exit_code == 3, local.output  # some items fail consensus
    local_statuses = [r["status"] for r in json.loads(local.stdout)["results"]]
    worker = workers.start("--queue", "q1", "--concurrency", "2")
    queued = cli(
        "validate", "--batch", str(path), "--validators", "2", "--queue", "q1", "--wait", "--json"
    )
    worker.send_signal(signal.SIGTERM)
    worker.communicate(timeout=120)
    document = json.loads(queued.stdout)
    assert document["state"] == "completed"
    assert [r["status"] for r in document["results"]] == local_statuses
    assert queued.exit_code == local.exit_code == 3


def test_thread_names_the_queued_batch_and_resume_and_concurrency_are_refused(
    redis_url: str, tmp_path: Path
) -> None:
    path = batch_file(tmp_path, 6)
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    queued = cli("validate", "--batch", str(path), "--queue", "q8", "--thread", "mybatch1")
    assert queued.exit_code == 0, queued.output
    assert queued.stdout.strip() == "mybatch1"
    status = cli("batch", "status", "mybatch1", "--json")
    assert status.exit_code == 0, status.output
    assert json.loads(status.stdout)["items"] == 6
    entries = client.xlen(stream_key("q8"))
    assert entries == 2  # 6 distinct texts, 4 per entry
    again = cli("validate", "--batch", str(path), "--queue", "q8", "--thread", "mybatch1")
    assert again.exit_code == 2
    assert "'mybatch1' is already queued" in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1
    # a queued run's id is taken as well, and a run may not take a batch's id
    enqueue_run(
        client, queue="q8", workflow="orchestration", inputs={"task": "x"}, thread_id="run-a1"
    )
    taken = cli("validate", "--batch", str(path), "--queue", "q8", "--thread", "run-a1")
    assert taken.exit_code == 2
    with pytest.raises(UsageError, match="mybatch1"):
        enqueue_run(
            client, queue="q8", workflow="orchestration", inputs={"task": "x"},
            thread_id="mybatch1",
        )  # fmt: skip
    assert client.xlen(stream_key("q8")) == entries + 1  # the run's entry alone
    keys = set(client.keys())
    for option in (["--resume", "--thread", "foo"], ["--concurrency", "3"]):
        refused = cli("validate", "--batch", str(path), "--queue", "q9", *option)
        assert refused.exit_code == 2
        assert option[0] in refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1
    assert set(client.keys()) == keys  # nothing enqueued by any of them
    assert not client.exists(batch_key("foo"))


def _run_state(run_id: str) -> str:
    return str(json.loads(cli("batch", "status", run_id, "--json").stdout)["state"])


@pytest.mark.postgres
@pytest.mark.slow
def test_a_second_sigterm_mid_run_stops_the_worker_cleanly_and_leaves_the_run_queued(
    workers: Workers, redis_url: str, postgres_url: str
) -> None:
    queued = cli("run", "Plan a community garden with seven plots", "--queue", "q11", "--json")
    assert queued.exit_code == 0, queued.output
    run_id = json.loads(queued.stdout)["run_id"]
    # slow calls: the agents are still at work (in the run's thread pool) when stopped
    doomed = workers.start("--queue", "q11", "--concurrency", "2", MULTIAGENT_SIM__TTFT_S="1.5")
    wait_until(lambda: plan_done(run_id))
    doomed.send_signal(signal.SIGTERM)
    assert doomed.stderr is not None
    seen = ""
    while "finishing the running entries" not in seen:  # the first stop was handled
        line = doomed.stderr.readline()
        assert line, seen
        seen += line
    doomed.send_signal(signal.SIGTERM)
    _out, err = doomed.communicate(timeout=120)
    assert doomed.returncode == 130
    assert "stopping now" in err
    assert "Traceback" not in err, err
    assert "Exception" not in err, err
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    assert int(client.xpending(stream_key("q11"), GROUP)["pending"]) == 1  # back to the queue
    status = json.loads(cli("batch", "status", run_id, "--json").stdout)
    assert status["state"] == "running"  # as the worker left it
    assert status["failures"] == 0  # cut short, not failed
    survivor = workers.start("--queue", "q11", "--claim-idle", "1")
    wait_until(lambda: _run_state(run_id) == "completed")
    survivor.send_signal(signal.SIGTERM)
    out, err = survivor.communicate(timeout=120)
    assert survivor.returncode == 0, err
    stats = json.loads(out)
    assert stats["reclaimed"] == 1
    assert stats["runs"] == 1


def _registered(client: redis.Redis, queue: str) -> bool:
    """Whether the queue's stream exists with a consumer in its group."""
    return bool(client.exists(stream_key(queue))) and bool(
        client.xinfo_consumers(stream_key(queue), GROUP)
    )


def test_a_worker_recreates_the_queue_redis_lost_and_keeps_working(
    redis_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for name, value in FAST.items():
        monkeypatch.setenv(name, value)
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    worker = QueueWorker(client, queue="q5", context=build_context(load_settings()))
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: _registered(client, "q5"))
        client.flushdb()  # Redis restarted without its data (`--save "" --appendonly no`)
        # the worker recreates its queue and registers again, before anything is queued
        wait_until(lambda: _registered(client, "q5"))
        path = batch_file(tmp_path, 5)
        queued = cli("validate", "--batch", str(path), "--queue", "q5", "--json")
        assert queued.exit_code == 0, queued.output
        batch_id = json.loads(queued.stdout)["batch_id"]
        wait_until(lambda: client.hlen(batch_key(batch_id, "records")) == 5)
    finally:
        worker.stop()
        thread.join(timeout=120)
    assert not thread.is_alive()
    assert worker.stats.stored == 5
    err = capsys.readouterr().err
    assert err.count("Redis lost queue q5") == 1
    assert "NOGROUP" not in err


def test_sigusr1_prints_every_threads_stack_and_the_worker_keeps_working(
    workers: Workers, redis_url: str, tmp_path: Path
) -> None:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    worker = workers.start("--queue", "q12")
    wait_until(lambda: _registered(client, "q12"))
    worker.send_signal(signal.SIGUSR1)
    queued = cli("validate", "--batch", str(batch_file(tmp_path, 2)), "--queue", "q12", "--json")
    assert queued.exit_code == 0, queued.output
    batch_id = json.loads(queued.stdout)["batch_id"]
    wait_until(lambda: client.hlen(batch_key(batch_id, "records")) == 2)  # still at work
    worker.send_signal(signal.SIGTERM)
    out, err = worker.communicate(timeout=120)
    assert worker.returncode == 0, err
    assert json.loads(out)["stored"] == 2
    assert "most recent call first" in err
    assert "multiagent/distributed/worker.py" in err  # the main thread, waiting on its slots
