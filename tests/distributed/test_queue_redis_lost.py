"""Redis restarted without its data while a worker runs a batch's chunks: the chunks that end
afterwards store nothing of a batch nobody can read any more, and the worker says so."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import redis

from multiagent.distributed.queue import GROUP, stream_key
from tests.distributed._workers import FAST, Workers, batch_file, cli, wait_until

pytestmark = pytest.mark.redis


def test_chunks_ending_after_redis_lost_their_batch_store_nothing_and_say_so(
    workers: Workers, redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in FAST.items():
        monkeypatch.setenv(name, value)
    queued = cli(
        "validate", "--batch", str(batch_file(tmp_path, 8)), "--queue", "ql", "--validators",
        "2", "--json",
    )  # fmt: skip
    assert queued.exit_code == 0, queued.output
    batch_id = json.loads(queued.stdout)["batch_id"]
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    # slow calls: both entries run (two slot threads) when Redis loses everything
    worker = workers.start(
        "--queue", "ql", "--concurrency", "1", "--claim-idle", "1", MULTIAGENT_SIM__TTFT_S="0.2"
    )  # fmt: skip
    wait_until(lambda: int(client.xpending(stream_key("ql"), GROUP)["pending"]) == 2)
    client.flushdb()  # Redis restarted without its data (`--save ""`), scripts forgotten too
    client.script_flush()
    stats = workers.stop(worker)
    assert stats["stored"] == 0
    assert stats["lost"] == 8
    # no keys left of the lost batch (they had no manifest, no expiry: read by nobody, ever)
    assert client.keys(f"*{batch_id}*") == []
    status = cli("batch", "status", batch_id)
    assert status.exit_code == 2
    assert f"unknown batch {batch_id!r}" in status.stderr
