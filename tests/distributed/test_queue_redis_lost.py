"""Redis restarted without its data while a worker runs a batch's chunks: the chunks that end
afterwards store nothing of a batch nobody can read any more, and the worker says so. Entries
whose batch is gone before they run (its record evicted or deleted) are counted lost as well.

The loss comes once a chunk's first call is at the simulator (over HTTP, so the test sees it):
both entries are then taken and the batch's judging read, whatever the machine's load; an
entry that had not started when its batch vanished would be acknowledged unrun instead."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
import redis

from multiagent.distributed.queue import GROUP, batch_key, stream_key
from multiagent.sim import SimServerConfig, run_sim_server
from tests.distributed._workers import (
    Workers,
    cli,
    openai_env,
    queue_fast_batch,
    sim_stats,
    wait_until,
)

pytestmark = pytest.mark.redis


def test_chunks_ending_after_redis_lost_their_batch_store_nothing_and_say_so(
    workers: Workers, redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # slow calls: both entries run (two slot threads) when Redis loses everything
    with run_sim_server(SimServerConfig(ttft_s=0.2, rpm=600_000, tpm=1e9)) as url:
        openai_env(monkeypatch, url)
        batch_id = queue_fast_batch(monkeypatch, tmp_path, items=8, queue="ql")
        client = redis.Redis.from_url(redis_url, decode_responses=True)
        worker = workers.start("--queue", "ql", "--concurrency", "1", "--claim-idle", "1")
        wait_until(lambda: int(client.xpending(stream_key("ql"), GROUP)["pending"]) == 2)
        wait_until(lambda: sim_stats(url)["in_flight"] == 1)  # a chunk's first call
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


def test_entries_whose_batch_is_gone_before_they_run_are_counted_lost_and_said(
    workers: Workers, redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with run_sim_server(SimServerConfig(rpm=600_000, tpm=1e9)) as url:
        openai_env(monkeypatch, url)
        batch_id = queue_fast_batch(monkeypatch, tmp_path, items=8, queue="qg")
        client = redis.Redis.from_url(redis_url, decode_responses=True)
        client.delete(batch_key(batch_id))  # evicted (allkeys-lru), or deleted by hand
        worker = workers.start("--queue", "qg", "--concurrency", "1")
        wait_until(lambda: client.xinfo_groups(stream_key("qg"))[0]["lag"] == 0)
        wait_until(lambda: int(client.xpending(stream_key("qg"), GROUP)["pending"]) == 0)
        worker.send_signal(signal.SIGTERM)
        out, err = worker.communicate(timeout=120)
        assert sim_stats(url)["totals"]["attempts"] == 0  # nothing of it ran
    assert worker.returncode == 0, err
    stats = json.loads(out)
    assert (stats["lost"], stats["stored"], stats["duplicates"]) == (8, 0, 0)
    assert err.count(f"batch {batch_id} is gone from Redis") == 2  # once per entry
