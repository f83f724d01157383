"""An entry whose work raises an unexpected error is a failed attempt, said in one line (its
traceback too with ``verbose``); the worker goes on."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
from typer.testing import CliRunner

from multiagent.cli import app
from multiagent.distributed import worker_items
from multiagent.distributed.deadletter import dead_key
from multiagent.distributed.queue import GROUP, batch_results, stream_key
from multiagent.distributed.worker import QueueWorker, WorkerStats
from multiagent.nodes.context import build_context
from multiagent.policies import load_settings
from tests.distributed._workers import FAST, wait_until

pytestmark = pytest.mark.redis


def _poisoned_batch(
    redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[redis.Redis, str]:
    """Queue a batch on ``q1`` whose first chunk (the one with POISON) raises what a worker
    meets when PostgreSQL restarts under it."""
    for name, value in FAST.items():
        monkeypatch.setenv(name, value)
    path = tmp_path / "items.jsonl"
    texts = ["POISON breaks the worker."] + [f"Oven {n} bakes oats." for n in range(8)]
    lines = [json.dumps({"id": f"i{n}", "text": text}) for n, text in enumerate(texts)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    queued = CliRunner().invoke(
        app, ["validate", "--batch", str(path), "--queue", "q1", "--validators", "2", "--json"]
    )
    assert queued.exit_code == 0, queued.output
    batch_id = str(json.loads(queued.stdout)["batch_id"])
    real_run_chunk = worker_items.run_chunk

    def poisoned(chunk_id: str, items: list[Any], **kwargs: Any) -> Any:
        if any("POISON" in item["text"] for item in items):
            raise psycopg.OperationalError("the connection is closed")
        return real_run_chunk(chunk_id, items, **kwargs)

    monkeypatch.setattr(worker_items, "run_chunk", poisoned)
    return redis.Redis.from_url(redis_url, decode_responses=True), batch_id


def _work(client: redis.Redis, *, max_attempts: int, verbose: bool = False) -> WorkerStats:
    """Run a worker on ``q1`` until the queue stays empty."""
    worker = QueueWorker(
        client, queue="q1", context=build_context(load_settings()), concurrency=1,
        claim_idle_s=0.2, max_attempts=max_attempts, verbose=verbose,
    )  # fmt: skip
    stats: list[WorkerStats] = []
    thread = threading.Thread(target=lambda: stats.append(worker.run(idle_exit_s=1.0)))
    thread.start()
    try:
        wait_until(lambda: not thread.is_alive(), seconds=60)
    finally:
        worker.abandon()
        thread.join(timeout=30)
    return stats[0]


def test_an_entry_that_raises_is_retried_then_dead_lettered_and_the_others_finish(
    redis_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # an error the worker did not expect (a database that refused a migration, a bug) killed
    # the slot's thread: with every slot dead the feeder still took entries and the heartbeat
    # kept them this worker's, so the batch never finished and the worker never exited
    client, batch_id = _poisoned_batch(redis_url, tmp_path, monkeypatch)
    stats = _work(client, max_attempts=2)
    assert stats.failures == 2
    assert stats.dead_letters == 1
    results = batch_results(client, batch_id)
    assert results["finished"] == 5  # the poisoned entry's four items are dead-lettered
    assert results["dead_lettered"] == ["i0", "i1", "i2", "i3"]
    assert client.xlen(dead_key("q1")) == 1
    _letter, dead = client.xrange(dead_key("q1"))[0]
    assert dead["error"] == "OperationalError: the connection is closed"
    assert int(client.xpending(stream_key("q1"), GROUP)["pending"]) == 0
    # each failure is one line: the entry, its batch, the attempt, the error, what comes next
    err = capsys.readouterr().err
    assert "Traceback" not in err
    said = f"worker: entry {dead['entry']} (batch {batch_id} chunk {dead['chunk']}) failed: "
    said += "OperationalError: the connection is closed; attempt"
    assert [line for line in err.splitlines() if "failed" in line] == [
        f"{said} 1 of 2; retried after 0.2 s idle",
        f"{said} 2 of 2; dead-lettered",
    ]


def test_a_verbose_worker_adds_the_traceback_of_an_entry_that_raises(
    redis_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    client, _batch_id = _poisoned_batch(redis_url, tmp_path, monkeypatch)
    stats = _work(client, max_attempts=1, verbose=True)
    assert stats.dead_letters == 1
    err = capsys.readouterr().err
    assert len([line for line in err.splitlines() if line.startswith("worker: entry ")]) == 1
    assert err.count("Traceback (most recent call last)") == 1
    assert "psycopg.OperationalError: the connection is closed" in err
