"""The worker path's round trips: chunks stored in one pipeline, entries taken ahead run on stop."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import redis
from typer.testing import CliRunner

from multiagent.cli import app
from multiagent.distributed import queue as queue_module
from multiagent.distributed import worker_chunks
from multiagent.distributed.deadletter import FinishedChunk, finish_chunks
from multiagent.distributed.queue import GROUP, batch_key, ensure_group, stream_key
from multiagent.distributed.worker import QueueWorker
from multiagent.nodes.context import build_context
from multiagent.policies import load_settings

pytestmark = pytest.mark.redis
FAST = {
    "MULTIAGENT_RATE_LIMIT__REQUESTS_PER_MINUTE": "600000",
    "MULTIAGENT_RATE_LIMIT__TOKENS_PER_MINUTE": "600000000",
}


def _enqueue(tmp_path: Path, count: int) -> str:
    path = tmp_path / "items.jsonl"
    path.write_text(
        "".join(
            json.dumps({"id": f"i{n}", "text": f"Oven {n} bakes rye."}) + "\n" for n in range(count)
        ),
        encoding="utf-8",
    )
    queued = CliRunner().invoke(
        app, ["validate", "--batch", str(path), "--queue", "q1", "--validators", "2", "--json"]
    )
    assert queued.exit_code == 0, queued.output
    return str(json.loads(queued.stdout)["batch_id"])


def _read(client: redis.Redis, count: int) -> list[tuple[str, dict[str, str]]]:
    replies: Any = client.xreadgroup(GROUP, "c1", {stream_key("q1"): ">"}, count=count)
    return [(str(entry_id), dict(fields)) for entry_id, fields in replies[0][1]]


def _ended(entry: tuple[str, dict[str, str]], batch_id: str) -> FinishedChunk:
    entry_id, fields = entry
    records = [(item["id"], json.dumps({"id": item["id"]})) for item in json.loads(fields["items"])]
    return FinishedChunk(
        entry_id=entry_id, batch_id=batch_id, chunk_id=fields["chunk"], records=records,
        usage_json="[]", ack=True,
    )  # fmt: skip


def test_chunks_ending_together_are_stored_and_acknowledged_once_in_one_pipeline(
    redis_url: str, tmp_path: Path
) -> None:
    batch_id = _enqueue(tmp_path, 8)  # two entries of four texts
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    ensure_group(client, "q1")
    entries = _read(client, 2)
    chunks = [_ended(entry, batch_id) for entry in entries]
    client.script_flush()  # a restarted Redis has forgotten the script: it is loaded again
    assert finish_chunks(client, "q1", chunks) == [4, 4]
    assert client.hlen(batch_key(batch_id, "records")) == 8
    assert client.hlen(batch_key(batch_id, "usage")) == 2
    assert client.xlen(stream_key("q1")) == 0  # acknowledged and deleted
    assert int(client.xpending(stream_key("q1"), GROUP)["pending"]) == 0
    # the same chunks ending again (a worker that died after storing): nothing stored twice
    assert finish_chunks(client, "q1", chunks) == [0, 0]
    assert client.hlen(batch_key(batch_id, "records")) == 8


def test_entries_taken_ahead_are_run_and_stored_before_a_stop_returns(
    redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in {**FAST, "MULTIAGENT_SIM__TTFT_S": "0.05"}.items():
        monkeypatch.setenv(name, value)
    batch_id = _enqueue(tmp_path, 16)  # four entries
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    worker = QueueWorker(
        client, queue="q1", context=build_context(load_settings()), concurrency=1, prefetch=3
    )
    stats: list[Any] = []
    thread = threading.Thread(target=lambda: stats.append(worker.run()))
    thread.start()
    try:
        deadline = time.monotonic() + 60
        # one running and three taken ahead: every entry of the batch is this worker's
        while int(client.xpending(stream_key("q1"), GROUP)["pending"]) < 4:
            assert time.monotonic() < deadline, "the worker took no entries ahead"
            time.sleep(0.01)
    finally:
        worker.stop()
        thread.join(timeout=120)
    assert not thread.is_alive()
    assert stats[0].chunks == 4
    assert stats[0].stored == 16
    assert client.hlen(batch_key(batch_id, "records")) == 16
    assert client.xlen(stream_key("q1")) == 0


def test_a_chunk_without_a_batch_budget_keeps_its_run_budget_in_process_not_in_redis(
    redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the profile's run budget applies to each chunk; a chunk is no thread anybody resumes, so
    # a budget of its own in Redis would cost two round trips per call and leave keys behind
    for name, value in FAST.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("MULTIAGENT_BUDGET_USD", "5")
    batch_id = _enqueue(tmp_path, 8)
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    worker = QueueWorker(client, queue="q1", context=build_context(load_settings()), concurrency=2)
    stats = worker.run(idle_exit_s=0.5)
    assert stats.stored == 8
    assert client.hlen(batch_key(batch_id, "records")) == 8
    assert stats.spent_nano > 0  # the calls were charged (to the in-process run ledger)
    assert list(client.scan_iter(match="multiagent:budget:*")) == []


def test_a_worker_reads_how_a_batch_is_judged_once_never_its_manifest(
    redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the manifest holds every item (megabytes for a large batch): a worker whose slots each
    # read it at a batch's start spent seconds of CPU and memory before its first call
    for name, value in FAST.items():
        monkeypatch.setenv(name, value)
    batch_id = _enqueue(tmp_path, 12)
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    reads: list[str] = []
    original = queue_module.load_judging

    def counting(client: Any, batch: str) -> Any:
        reads.append(batch)
        return original(client, batch)

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a worker read a batch's whole manifest")

    monkeypatch.setattr(queue_module, "load_manifest", refuse)
    monkeypatch.setattr(worker_chunks, "load_judging", counting)
    worker = QueueWorker(client, queue="q1", context=build_context(load_settings()), concurrency=4)
    stats = worker.run(idle_exit_s=0.5)
    assert stats.stored == 12
    assert reads == [batch_id]  # once per process, however many slots start on it


def test_a_batch_queued_without_its_judging_field_is_judged_from_its_manifest(
    redis_url: str, tmp_path: Path
) -> None:
    batch_id = _enqueue(tmp_path, 2)
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    manifest = queue_module.load_manifest(client, batch_id)
    judging = queue_module.load_judging(client, batch_id)
    assert judging == queue_module.Judging(manifest.validators, manifest.threshold)
    assert len(judging.validators) == 2
    client.hdel(batch_key(batch_id), "judging")  # as a batch queued by an earlier version
    assert queue_module.load_judging(client, batch_id) == judging
    assert queue_module.load_judging(client, "batch-000000000000") is None
