"""Distributed batches on a real Redis: enqueue, worker processes, reclaim after a kill."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
import redis

from multiagent.distributed.queue import GROUP, batch_key, stream_key
from tests.distributed._workers import FAST, Workers, batch_file, cli, wait_until

pytestmark = pytest.mark.redis


def _enqueue(path: Path, queue: str = "q1") -> str:
    queued = cli("validate", "--batch", str(path), "--queue", queue, "--validators", "2", "--json")
    assert queued.exit_code == 0, queued.output
    return str(json.loads(queued.stdout)["batch_id"])


@pytest.fixture(autouse=True)
def fast_provider(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in FAST.items():
        monkeypatch.setenv(name, value)


def _consumers(client: redis.Redis) -> int:
    """Workers that have read the queue (so their signal handlers are in place)."""
    return len(client.xinfo_consumers(stream_key("q1"), GROUP))


def _names(client: redis.Redis) -> set[str]:
    return {str(c["name"]) for c in client.xinfo_consumers(stream_key("q1"), GROUP)}


def test_bad_queue_name_unknown_batch_and_unreachable_redis_are_one_line_exit_2(
    redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = batch_file(tmp_path, 3)
    client = redis.Redis.from_url(redis_url)
    spaced = cli("validate", "--batch", str(path), "--queue", "my queue")
    assert spaced.exit_code == 2
    assert "invalid queue name 'my queue'" in spaced.stderr
    unknown = cli("batch", "status", "batch-0123456789ab")
    assert unknown.exit_code == 2
    assert "unknown batch 'batch-0123456789ab'" in unknown.stderr
    assert cli("batch", "results", "nope").exit_code == 2
    monkeypatch.setenv("MULTIAGENT_REDIS_URL", "redis://127.0.0.1:1/0")
    down = cli("validate", "--batch", str(path), "--queue", "q1")
    assert down.exit_code == 2
    assert "cannot reach Redis at MULTIAGENT_REDIS_URL 'redis://127.0.0.1:1/0'" in down.stderr
    monkeypatch.setenv("MULTIAGENT_REDIS_URL", "http://127.0.0.1:6379")
    malformed = cli("batch", "status", "batch-0123456789ab")
    assert malformed.exit_code == 2
    assert "malformed MULTIAGENT_REDIS_URL 'http://127.0.0.1:6379'" in malformed.stderr
    assert client.dbsize() == 0  # nothing was enqueued by any of them
    monkeypatch.delenv("MULTIAGENT_REDIS_URL")
    unset = cli("validate", "--batch", str(path), "--queue", "q1")
    assert unset.exit_code == 2
    assert "MULTIAGENT_REDIS_URL" in unset.stderr


@pytest.mark.slow
def test_two_workers_finish_a_batch_and_store_every_result_once(
    workers: Workers, redis_url: str, tmp_path: Path
) -> None:
    batch_id = _enqueue(batch_file(tmp_path, 30))
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    assert client.xlen(stream_key("q1")) == 8  # 30 items, 4 distinct texts per entry
    # before any worker: the status counts what is left, the results name it; the key
    # ``unfinished`` means the ids in both documents, the count has its own key
    waiting = json.loads(cli("batch", "status", batch_id, "--json").stdout)
    pending = json.loads(cli("batch", "results", batch_id, "--json").stdout)
    assert "unfinished" not in waiting
    assert waiting["unfinished_count"] == pending["unfinished_count"] == 30
    assert pending["unfinished"] == [f"i{n}" for n in range(30)]
    first = workers.start("--queue", "q1", "--concurrency", "2")
    second = workers.start("--queue", "q1", "--concurrency", "2")
    wait_until(lambda: client.hlen(batch_key(batch_id, "records")) == 30)
    wait_until(lambda: _consumers(client) == 2)
    stats = [workers.stop(first), workers.stop(second)]
    assert sum(s["stored"] for s in stats) == 30
    assert sum(s["chunks"] for s in stats) == 8
    status = json.loads(cli("batch", "status", batch_id, "--json").stdout)
    assert status["state"] == "completed"
    assert status["chunk_runs"] == 8
    assert status["queue_pending"] == 0
    results = json.loads(cli("batch", "results", batch_id, "--json").stdout)
    assert [r["id"] for r in results["results"]] == [f"i{n}" for n in range(30)]
    assert results["unfinished"] == []
    assert results["usage"]["calls"] == 30 * 2
    assert len(results["verdicts"]) == 30 * 2
    # the workers' calls reached the metrics history (as they exited), where `metrics show` reads
    shown = json.loads(cli("metrics", "show", "--json").stdout)
    assert shown["calls"]["total"] == 30 * 2


@pytest.mark.slow
def test_a_killed_workers_chunks_are_reclaimed_by_another_none_lost_none_doubled(
    workers: Workers, redis_url: str, tmp_path: Path
) -> None:
    batch_id = _enqueue(batch_file(tmp_path, 24))
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    doomed = workers.start(
        "--queue", "q1", "--concurrency", "2", "--claim-idle", "1", MULTIAGENT_SIM__TTFT_S="0.3"
    )  # fmt: skip
    # wait until the doomed worker holds entries and has stored some of its work
    wait_until(lambda: client.hlen(batch_key(batch_id, "records")) >= 4)
    wait_until(lambda: int(client.xpending(stream_key("q1"), GROUP)["pending"]) >= 1)
    held = {c["name"]: c["pending"] for c in client.xinfo_consumers(stream_key("q1"), GROUP)}
    doomed.send_signal(signal.SIGKILL)
    doomed.communicate()
    assert sum(held.values()) >= 1
    survivor = workers.start("--queue", "q1", "--concurrency", "2", "--claim-idle", "1")
    wait_until(lambda: client.hlen(batch_key(batch_id, "records")) == 24)
    # the killed worker's consumer holds nothing once its entries are reclaimed, and has read
    # nothing since: the survivor deletes it (it stayed listed for good)
    wait_until(lambda: _names(client) and not _names(client) & set(held))
    stats = workers.stop(survivor)
    assert stats["reclaimed"] >= 1  # it took over what the killed worker held
    results = json.loads(cli("batch", "results", batch_id, "--json").stdout)
    ids = [r["id"] for r in results["results"]]
    assert ids == [f"i{n}" for n in range(24)]  # none lost, each once, in input order
    assert results["unfinished"] == []
    assert int(client.xpending(stream_key("q1"), GROUP)["pending"]) == 0
