"""A worker frozen (SIGSTOP) past its claim idle time while another takes its entries over, then
resumed: it leaves the entries to the other worker, those it had not started and those it was
running (stopped before their next model call, nothing stored), and takes none back."""

from __future__ import annotations

import json
import signal
import socket
from pathlib import Path

import pytest
import redis

from multiagent.distributed.queue import GROUP, batch_key, stream_key
from multiagent.distributed.worker_feed import claim_own
from tests.distributed._workers import Workers, cli, queue_fast_batch, wait_until

pytestmark = pytest.mark.redis


def _pending_of(client: redis.Redis, consumer: str) -> int:
    found = {c["name"]: c["pending"] for c in client.xinfo_consumers(stream_key("qf"), GROUP)}
    return int(found.get(consumer, 0))


@pytest.mark.slow
def test_a_frozen_worker_resumed_runs_none_of_the_entries_another_took_over_further(
    workers: Workers, redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    batch_id = queue_fast_batch(monkeypatch, tmp_path, items=16, queue="qf")
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    # one call in flight: two slot threads, one entry taken ahead; slow calls, so the frozen
    # worker holds two running entries and one it has not started; a home of its own, so its
    # calls are not answered from the other worker's analysis cache
    frozen = workers.start(
        "--queue", "qf", "--concurrency", "1", "--claim-idle", "1",
        MULTIAGENT_SIM__TTFT_S="0.3", MULTIAGENT_HOME=str(tmp_path / "frozen"),
    )  # fmt: skip
    consumer = f"{socket.gethostname()}:{frozen.pid}"
    wait_until(lambda: _pending_of(client, consumer) == 3)
    frozen.send_signal(signal.SIGSTOP)
    other = workers.start("--queue", "qf", "--concurrency", "2", "--claim-idle", "1")
    wait_until(lambda: client.hlen(batch_key(batch_id, "records")) == 16)
    wait_until(lambda: int(client.xpending(stream_key("qf"), GROUP)["pending"]) == 0)
    frozen.send_signal(signal.SIGCONT)
    resumed = workers.stop(frozen)
    # the two entries it was running stop before their next call, the one it had not started
    # is not run: all three are the other worker's, nothing of them is stored twice
    assert resumed["taken_over"] == 3
    assert resumed["chunks"] == 0
    assert resumed["stored"] == 0
    assert workers.stop(other)["reclaimed"] == 3
    results = json.loads(cli("batch", "results", batch_id, "--json").stdout)
    assert [r["id"] for r in results["results"]] == [f"i{n}" for n in range(16)]
    assert results["state"] == "completed"
    # every item validated once to the end: two calls each, none by a chunk run twice
    usage = results["usage"]
    assert usage["calls"] + usage["analysis_cache_hits"] == 2 * 16
    assert int(client.xpending(stream_key("qf"), GROUP)["pending"]) == 0


def test_the_heartbeat_keeps_its_own_entries_fresh_and_takes_none_back(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    stream = stream_key("qh")
    client.xgroup_create(stream, GROUP, id="0", mkstream=True)
    ids = [client.xadd(stream, {"n": str(n)}) for n in range(3)]
    client.xreadgroup(GROUP, "frozen", {stream: ">"}, count=3)
    # while "frozen" was silent, "other" took the first over and finished the second
    client.xclaim(stream, GROUP, "other", 0, [ids[0]], justid=True)
    client.xack(stream, GROUP, ids[1])
    assert claim_own(client, stream, "frozen", ids) == {ids[2]}
    owners = {
        p["message_id"]: p["consumer"] for p in client.xpending_range(stream, GROUP, "-", "+", 10)
    }
    assert owners == {ids[0]: "other", ids[2]: "frozen"}
