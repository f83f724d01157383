"""An entry whose work raises an unexpected error is a failed attempt; the worker goes on."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest
import redis
from typer.testing import CliRunner

from multiagent.cli import app
from multiagent.distributed import worker_chunks
from multiagent.distributed.deadletter import dead_key
from multiagent.distributed.queue import GROUP, batch_results, stream_key
from multiagent.distributed.worker import QueueWorker
from multiagent.nodes.context import build_context
from multiagent.policies import load_settings
from tests.distributed._workers import FAST, wait_until

pytestmark = pytest.mark.redis


def test_an_entry_that_raises_is_retried_then_dead_lettered_and_the_others_finish(
    redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # an error the worker did not expect (a database that refused a migration, a bug) killed
    # the slot's thread: with every slot dead the feeder still took entries and the heartbeat
    # kept them this worker's, so the batch never finished and the worker never exited
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
    real_run_chunk = worker_chunks.run_chunk

    def poisoned(chunk_id: str, items: list[Any], **kwargs: Any) -> Any:
        if any("POISON" in item["text"] for item in items):
            raise RuntimeError("unexpected failure")
        return real_run_chunk(chunk_id, items, **kwargs)

    monkeypatch.setattr(worker_chunks, "run_chunk", poisoned)
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    worker = QueueWorker(
        client, queue="q1", context=build_context(load_settings()), concurrency=1,
        claim_idle_s=0.2, max_attempts=2,
    )  # fmt: skip
    stats: list[Any] = []
    thread = threading.Thread(target=lambda: stats.append(worker.run(idle_exit_s=1.0)))
    thread.start()
    try:
        wait_until(lambda: not thread.is_alive(), seconds=60)
    finally:
        worker.abandon()
        thread.join(timeout=30)
    assert stats[0].failures == 2
    assert stats[0].dead_letters == 1
    results = batch_results(client, batch_id)
    assert results["finished"] == 5  # the poisoned entry's four items are dead-lettered
    assert results["dead_lettered"] == ["i0", "i1", "i2", "i3"]
    assert client.xlen(dead_key("q1")) == 1
    assert "RuntimeError: unexpected failure" in client.xrange(dead_key("q1"))[0][1]["error"]
    assert int(client.xpending(stream_key("q1"), GROUP)["pending"]) == 0
