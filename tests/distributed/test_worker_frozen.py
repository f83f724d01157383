"""A worker frozen (SIGSTOP) past its claim idle time while another takes its entries over, then
resumed: it leaves the entries to the other worker, those it had not started and those it was
running (batch chunks and queued runs, stopped before their next model call or checkpoint,
nothing stored), and takes none back. What its calls in flight cost, which the provider served
while it slept, is in the batch's or the run's usage: every call the simulator served is."""

from __future__ import annotations

import json
import signal
import socket
from pathlib import Path

import pytest
import redis

from multiagent.distributed.deadletter import run_key
from multiagent.distributed.queue import GROUP, batch_key, stream_key
from multiagent.distributed.worker_feed import claim_own
from multiagent.persistence.checkpointer import open_checkpointer
from multiagent.policies import load_settings
from multiagent.sim import SimServerConfig, run_sim_server
from tests.distributed._workers import (
    Workers,
    cli,
    openai_env,
    plan_done,
    queue_fast_batch,
    sim_stats,
    wait_until,
)

pytestmark = pytest.mark.redis


def _pending_of(client: redis.Redis, consumer: str) -> int:
    found = {c["name"]: c["pending"] for c in client.xinfo_consumers(stream_key("qf"), GROUP)}
    return int(found.get(consumer, 0))


@pytest.mark.slow
def test_a_frozen_worker_resumed_runs_none_of_the_entries_another_took_over_further(
    workers: Workers, redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the simulator over HTTP, beside the workers: it counts every call it served, paid or not
    with run_sim_server(SimServerConfig(ttft_s=0.3, rpm=600_000, tpm=1e9)) as url:
        openai_env(monkeypatch, url)
        batch_id = queue_fast_batch(monkeypatch, tmp_path, items=16, queue="qf")
        client = redis.Redis.from_url(redis_url, decode_responses=True)
        # one call in flight: two slot threads, one entry taken ahead; slow calls, so the
        # frozen worker holds two running entries and one it has not started; a home of its
        # own, so its calls are not answered from the other worker's analysis cache
        frozen = workers.start(
            "--queue", "qf", "--concurrency", "1", "--claim-idle", "1",
            MULTIAGENT_HOME=str(tmp_path / "frozen"),
        )  # fmt: skip
        consumer = f"{socket.gethostname()}:{frozen.pid}"
        wait_until(lambda: _pending_of(client, consumer) == 3)
        # frozen with a call at the provider: served (and paid) while it sleeps
        wait_until(lambda: sim_stats(url)["in_flight"] == 1)
        frozen.send_signal(signal.SIGSTOP)
        other = workers.start("--queue", "qf", "--concurrency", "2", "--claim-idle", "1")
        wait_until(lambda: client.hlen(batch_key(batch_id, "records")) == 16)
        wait_until(lambda: int(client.xpending(stream_key("qf"), GROUP)["pending"]) == 0)
        frozen.send_signal(signal.SIGCONT)
        resumed = workers.stop(frozen)
        assert workers.stop(other)["reclaimed"] == 3
        served = sim_stats(url)["totals"]
    # the two entries it was running stop before their next call, the one it had not started
    # is not run: all three are the other worker's, nothing of them is stored twice
    assert resumed["taken_over"] == 3
    assert resumed["chunks"] == 0
    assert resumed["stored"] == 0
    # what its call in flight cost is its spend, and the batch's
    assert resumed["taken_over_usd"] == resumed["spent_usd"] > 0
    results = json.loads(cli("batch", "results", batch_id, "--json").stdout)
    assert [r["id"] for r in results["results"]] == [f"i{n}" for n in range(16)]
    assert results["state"] == "completed"
    # every call the provider served is in the batch's usage, the frozen worker's too, beside
    # its calls stopped before they were sent (cancelled, of 0 tokens: errors of their node)
    usage = results["usage"]
    unsent = sum(entry.get("errors", 0) for _, entry in _kept_usage(client, batch_id))
    assert usage["calls"] - usage["cache_hits"] - unsent == served["successes"]
    assert served["successes"] == served["attempts"]
    # and no chunk ran to the end twice: each item validated once (two verdicts, called or
    # answered by the analysis cache) by the attempts that ran to the end; the frozen worker's
    # attempts sent one call: the one in flight. The other chunk's call, waiting for the
    # in-flight place or not yet there, asked again once it had the place, and was not sent
    ended, taken_over = _calls_by_attempt(client, batch_id)
    assert ended == 2 * 16
    assert taken_over == 1
    assert int(client.xpending(stream_key("qf"), GROUP)["pending"]) == 0


def _steps(run_id: str) -> list[int]:
    """The steps of the thread's checkpoints, newest first (a fork shows a step twice)."""
    with open_checkpointer(load_settings()) as saver:
        found = saver.list({"configurable": {"thread_id": run_id}})
        return [int(c.metadata["step"]) for c in found]


@pytest.mark.postgres
@pytest.mark.slow
def test_a_frozen_worker_resumed_leaves_a_queued_run_to_its_new_owner_and_its_calls_counted(
    workers: Workers, redis_url: str, postgres_url: str, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    with run_sim_server(SimServerConfig(ttft_s=0.5, rpm=600_000, tpm=1e9)) as url:
        openai_env(monkeypatch, url)
        queued = cli("run", "Plan a community garden with seven plots", "--queue", "qr", "--json")
        assert queued.exit_code == 0, queued.output
        run_id = json.loads(queued.stdout)["run_id"]
        client = redis.Redis.from_url(redis_url, decode_responses=True)
        # homes of their own: no answer comes from the other worker's completion cache
        frozen = workers.start(
            "--queue", "qr", "--claim-idle", "1", MULTIAGENT_HOME=str(tmp_path / "frozen")
        )
        # frozen with the agents' calls at the provider: served (and paid) while it sleeps
        wait_until(lambda: plan_done(run_id) and sim_stats(url)["in_flight"] > 0)
        frozen.send_signal(signal.SIGSTOP)
        other = workers.start(
            "--queue", "qr", "--claim-idle", "1", MULTIAGENT_HOME=str(tmp_path / "other")
        )
        wait_until(lambda: client.hexists(run_key(run_id), "result"))
        steps = _steps(run_id)
        frozen.send_signal(signal.SIGCONT)
        resumed = workers.stop(frozen)
        finished = workers.stop(other)
        served = sim_stats(url)["totals"]
    # the frozen worker stops at its next call or checkpoint: the run is its new owner's, run
    # once to its end, the thread written by it alone (no step written twice, no fork)
    assert resumed["taken_over"] == 1
    assert resumed["runs"] == 0
    assert finished["runs"] == finished["resumed"] == finished["reclaimed"] == 1
    assert _steps(run_id) == steps == sorted(set(steps), reverse=True)
    assert int(client.xpending(stream_key("qr"), GROUP)["pending"]) == 0
    # every call the simulator served is in the run's usage: the frozen worker's calls in
    # flight too, recorded once it resumed, after the run's report was stored
    result = json.loads(cli("batch", "results", run_id, "--json").stdout)
    assert result["state"] == "completed"
    usage = result["usage"]
    assert usage["calls"] - usage["cache_hits"] == served["successes"] == served["attempts"]
    assert usage["calls"] > result["this_run"]["calls"] + 1  # the planner's, and the frozen's
    assert resumed["taken_over_usd"] > 0
    status = json.loads(cli("batch", "status", run_id, "--json").stdout)
    assert status["usage"] == usage


def _kept_usage(client: redis.Redis, batch_id: str) -> list[tuple[str, dict[str, int]]]:
    """Each attempt's usage entries, by the field they are kept under."""
    kept = client.hgetall(batch_key(batch_id, "usage"))
    return [(field, entry) for field, text in kept.items() for entry in json.loads(text)]


def _calls_by_attempt(client: redis.Redis, batch_id: str) -> tuple[int, int]:
    """Calls and analysis-cache answers of the attempts that ended; calls sent by those taken
    over (kept under names saying so; a call stopped before it was sent is an error)."""
    ended = taken_over = 0
    for field, entry in _kept_usage(client, batch_id):
        if ":taken-over-" in field:
            taken_over += entry["calls"] - entry.get("errors", 0)
        else:
            ended += entry["calls"] + entry.get("analysis_cache_hits", 0)
    return ended, taken_over


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
