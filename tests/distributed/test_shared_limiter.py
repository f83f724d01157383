"""The Redis-shared controller with real processes, a real redis-server and the simulator.

Counts come from the simulator's ``/sim/stats`` (what the provider saw) and from Redis; no test
asserts a duration.

"No request during a Retry-After" is judged per request, not on the simulator's ``early`` count:
that counts arrivals, and a request the controller let go before any 429 existed may arrive
after one (a loaded machine holds it between the "go" and the socket). The simulator's event log
names each 429 and the deadline it announced; the workers say when each request was let go and
when each 429's pause was in Redis. The promise: nothing let go from the moment a pause is known
until the deadline the provider announced. "Let go" is the Redis time of the controller's "go"
(the decision itself); the worker's own clock read as its ``with`` body starts comes after it,
later still on a loaded machine, and is reported beside it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import redis

from multiagent.models.adaptive import shared_controller
from multiagent.models.backpressure import BackpressureConfig
from multiagent.models.backpressure_redis import (
    RedisBackpressureController,
    connect,
    shared_redis_controller,
)
from multiagent.sim import SimServerConfig, run_sim_server

pytestmark = pytest.mark.redis
WORKER = Path(__file__).with_name("limiter_worker.py")
ROOT = Path(__file__).resolve().parents[2]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def _stats(base_url: str) -> dict[str, int]:
    totals = httpx.get(base_url.removesuffix("/v1") + "/sim/stats").json()
    return dict(totals["totals"])


def _events(base_url: str) -> list[dict[str, Any]]:
    document = httpx.get(base_url.removesuffix("/v1") + "/sim/events").json()
    assert document["recording"]
    return list(document["events"])


def _let_go(request: dict[str, Any], moment: str = "granted") -> float:
    """When ``request`` was let go (the worker's clock read when Redis's is missing: a fallback)."""
    at = request[moment]
    return float(request["released"] if at is None else at)


def _sent_during_known_pauses(
    results: list[dict[str, Any]], events: list[dict[str, Any]], *, moment: str = "granted"
) -> list[str]:
    """Requests let go (``moment``: ``granted``, the Redis time of the controller's "go", or
    ``released``, when the worker's body started) at or after a 429's pause was in Redis and
    before the deadline the simulator announced with that 429; one line for each."""
    requests = {r["id"]: r for result in results for r in result["requests"]}
    told = [event for event in events if event["kind"] == "retry_after"]
    # every 429 the simulator sent is one a worker recorded, and the other way round
    assert sorted(e["request_id"] for e in told) == sorted(
        i for i, r in requests.items() if r["known"] is not None
    )
    found = []
    for event in told:
        known, deadline = requests[event["request_id"]]["known"], event["deadline"]
        for request in requests.values():
            sent = _let_go(request, moment)
            if known <= sent < deadline:
                found.append(
                    f"{request['id']} let go {sent - known:.4f} s after the pause of "
                    f"{event['request_id']} was known, {deadline - sent:.4f} s before its end"
                )
    return found


def _report(stats: dict[str, int], results: list[dict[str, Any]],
            events: list[dict[str, Any]]) -> None:  # fmt: skip
    """One line (shown with ``-s``): early arrivals against sends during a known pause, and how
    long before the pause they arrived in was known each early arrival had been let go."""
    during = len(_sent_during_known_pauses(results, events))
    by_body = len(_sent_during_known_pauses(results, events, moment="released"))
    requests = {r["id"]: r for result in results for r in result["requests"]}
    known_by_deadline = {
        e["deadline"]: requests[e["request_id"]]["known"]
        for e in events
        if e["kind"] == "retry_after"
    }
    leads = [
        f"{(known_by_deadline[e['deadline']] - _let_go(requests[e['request_id']])) * 1000:.1f}"
        for e in events
        if e["kind"] == "early" and e["deadline"] in known_by_deadline
    ]
    print(
        f"\nshared limiter: {stats['attempts']} attempts, {stats['rate_limited']} 429s, "
        f"arrived early {stats['early']} (let go {', '.join(leads) or '-'} ms before the "
        f"pause was known), let go during a known pause {during} "
        f"(by the worker's own clock read: {by_body})"
    )


def _run_workers(redis_url: str, base_url: str, *, processes: int, loops: int, calls: int,
                 rps: float) -> list[dict[str, Any]]:  # fmt: skip
    command = [sys.executable, str(WORKER), redis_url, base_url, str(loops), str(calls), str(rps)]
    workers = [
        subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=_env()
        )
        for _ in range(processes)
    ]
    for worker in workers:  # every process warmed up, then all start together
        assert worker.stdout is not None
        assert worker.stdout.readline().strip() == "ready"
    outputs = [worker.communicate(input="go\n", timeout=180)[0] for worker in workers]
    assert [worker.returncode for worker in workers] == [0] * processes
    return [json.loads(out.strip().splitlines()[-1]) for out in outputs]


def _rate_limited(retry_after: str) -> openai.RateLimitError:
    request = httpx.Request("POST", "http://127.0.0.1/v1/chat/completions")
    response = httpx.Response(429, headers={"retry-after": retry_after}, request=request)
    return openai.RateLimitError("slow down", response=response, body=None)


@pytest.mark.slow
@pytest.mark.parametrize("processes", [2, 4])
def test_processes_share_one_limit(redis_url: str, processes: int) -> None:
    """Every process paces to the provider's full limit alone (rps above capacity); shared,
    they stay within it: few 429s and not one request let go during a Retry-After known to
    the shared limiter (arrivals during one are reported, not judged: see the module)."""
    config = SimServerConfig(rpm=1800, limit_headers=False, event_log=True)  # 30 req/s
    with run_sim_server(config) as base_url:
        results = _run_workers(redis_url, base_url, processes=processes, loops=4, calls=8, rps=25.0)
        stats, events = _stats(base_url), _events(base_url)
    _report(stats, results, events)
    assert sum(r["ok"] for r in results) == processes * 4 * 8 == stats["successes"]
    assert _sent_during_known_pauses(results, events) == []
    assert stats["rate_limited"] <= 0.15 * stats["attempts"]
    assert max(r["processes"] for r in results) >= 2  # they saw each other


def test_retry_after_seen_by_one_process_pauses_the_others(redis_url: str) -> None:
    config = BackpressureConfig(max_concurrency=4, requests_per_s=100.0)
    first = RedisBackpressureController(config, client=connect(redis_url), key="t:gate")
    other = RedisBackpressureController(config, client=connect(redis_url), key="t:gate")
    try:
        ticket = first.acquire(tokens=1)
        first.release(ticket, error=_rate_limited("30"))
        waiting = other.request(tokens=1)
        wait = other.poll(waiting)
        assert 25.0 < wait <= 30.0  # the other controller is held by the shared pause
        assert other.state().paused_for_s > 25.0
        assert other.paused_for() > 25.0  # a chain routes around the pause Redis holds
        assert other.state().rate_limited == 1
        other.cancel(waiting)
        assert other.state().in_flight + other.state().queued == 0
    finally:
        first.close()
        other.close()


@pytest.mark.slow
def test_retry_after_across_processes_no_early_sends(redis_url: str) -> None:
    """Capacity far below the pace the processes start at: 429s with Retry-After happen, and
    no process lets a request go during one once it is known, whoever was told."""
    config = SimServerConfig(rpm=600, limit_headers=False, event_log=True)
    with run_sim_server(config) as base_url:
        results = _run_workers(redis_url, base_url, processes=2, loops=3, calls=5, rps=40.0)
        stats, events = _stats(base_url), _events(base_url)
    _report(stats, results, events)
    assert stats["rate_limited"] > 0
    assert _sent_during_known_pauses(results, events) == []
    assert sum(r["ok"] for r in results) == stats["successes"] == 30


@pytest.mark.slow
def test_killed_process_gives_its_slots_back(redis_url: str) -> None:
    holder = subprocess.Popen(
        [sys.executable, str(WORKER), redis_url, "http://unused/v1", "3", "0", "10", "hold"],
        stdout=subprocess.PIPE, text=True, env=_env(),
    )  # fmt: skip
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().startswith("held 3")
        config = BackpressureConfig(max_concurrency=3, requests_per_s=10.0)
        survivor = RedisBackpressureController(config, client=connect(redis_url), key="test:bp:sim")
        probe = survivor.request(tokens=1)
        assert survivor.poll(probe) == float("inf")  # every slot is the holder's
        survivor.cancel(probe)
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
        got: list[object] = []
        thread = threading.Thread(target=lambda: got.append(survivor.acquire(tokens=1)))
        thread.start()
        thread.join(timeout=30)
        assert len(got) == 1  # the dead process's leases expired
        state = survivor.state()
        assert list(state.in_flight_by_process) == [survivor.process_id]
        survivor.cancel(got[0])  # type: ignore[arg-type]
        survivor.close()
    finally:
        holder.kill()
        holder.wait()


def test_unreachable_redis_at_start_is_one_line() -> None:
    from multiagent.errors import UsageError

    with pytest.raises(UsageError, match=r"cannot reach Redis at MULTIAGENT_REDIS_URL"):
        connect("redis://127.0.0.1:1/0")


def test_shared_controller_selects_redis_when_configured(redis_url: str) -> None:
    config = BackpressureConfig()
    shared = shared_controller(
        provider="sim", model="m", base_url=None, config=config, redis_url=redis_url
    )
    local = shared_controller(provider="sim", model="m", base_url=None, config=config)
    assert isinstance(shared, RedisBackpressureController)
    assert not isinstance(local, RedisBackpressureController)
    assert shared is shared_redis_controller(
        provider="sim", model="m", base_url=None, config=config, redis_url=redis_url
    )
    with redis.Redis.from_url(redis_url) as client:
        assert client.exists("multiagent:bp:sim|default|m:state") == 0  # made on first use
    shared.release(shared.acquire(tokens=1))
    names = {name for name, _, _ in shared.samples()}
    assert {"backpressure_processes", "backpressure_shared", "backpressure_limit"} <= names


@pytest.mark.parametrize("shared", [True, False])
def test_an_answer_counts_as_alone_only_when_nothing_else_was_out(
    redis_url: str, shared: bool
) -> None:
    # what lets a controller end its probe for an unqueued latency (settled_limit), in-process
    # and shared through Redis alike
    controller = shared_controller(
        provider="sim", model=f"alone-{shared}", base_url=None,
        config=BackpressureConfig(requests_per_s=1e6), redis_url=redis_url if shared else None,
    )  # fmt: skip
    latency = controller._latency
    first, second = controller.acquire(tokens=1), controller.acquire(tokens=1)
    controller.release(first, output_tokens=10)  # the second went while it was out
    controller.release(second, output_tokens=10)  # it went while the first was out
    assert latency.known
    assert not latency.confirmed
    third = controller.acquire(tokens=1)
    controller.release(controller.acquire(tokens=1), output_tokens=10)  # sent beside the third
    controller.release(third, output_tokens=10)
    assert not latency.confirmed
    controller.release(controller.acquire(tokens=1), output_tokens=10)
    assert latency.confirmed


def test_a_closed_controller_reports_no_gauges_and_never_falls_back(redis_url: str) -> None:
    """Metrics collected after ``close`` (an exporter's last tick, once the Redis it used is
    gone) must not send the closed controller into its fallback, nor print that Redis is lost."""
    from multiagent._metrics import get_metrics

    controller = shared_redis_controller(
        provider="sim", model="closed", base_url=None, config=BackpressureConfig(),
        redis_url=redis_url,
    )  # fmt: skip
    controller.release(controller.acquire(tokens=1))
    assert controller.samples()
    controller.close()
    controller._redis.connection_pool.reset()  # type: ignore[attr-defined]
    controller._redis.connection_pool.connection_kwargs["port"] = 9  # nothing listens there
    get_metrics().snapshot()  # collects every registered collector, this one included
    assert controller.samples() == []
    assert controller.shared
    assert controller.outages == 0


def _start_redis(port: int, folder: Path) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", "",
         "--appendonly", "no", "--dir", str(folder)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    for _ in range(200):
        try:
            with redis.Redis(port=port, socket_connect_timeout=0.2) as client:
                client.ping()
                return process
        except redis.exceptions.ConnectionError:
            threading.Event().wait(0.05)
    raise RuntimeError("redis-server did not start")


@pytest.mark.slow
def test_redis_restarted_mid_run_falls_back_then_rejoins(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    server = _start_redis(port, tmp_path)
    config = BackpressureConfig(max_concurrency=4, requests_per_s=50.0)
    controller = RedisBackpressureController(
        config, client=connect(f"redis://127.0.0.1:{port}/0"), key="t:restart"
    )
    try:
        for _ in range(3):
            controller.release(controller.acquire(tokens=1))
        assert controller.state().limit == 4
        server.terminate()
        server.wait()
        held = controller.acquire(tokens=1)  # Redis is gone: admitted by the fallback
        assert not controller.shared
        assert controller.state().in_flight == 1
        controller.release(held)
        for _ in range(3):
            controller.release(controller.acquire(tokens=1))
        fallen = controller.state()
        assert (fallen.shared, fallen.in_flight, fallen.queued) == (False, 0, 0)
        assert fallen.limit == 2  # half of the last shared limit, one process
        server = _start_redis(port, tmp_path)
        rejoined = threading.Event()
        for _ in range(300):
            if controller.shared:
                rejoined.set()
                break
            threading.Event().wait(0.05)
        assert rejoined.is_set()
        ticket = controller.acquire(tokens=1)
        state = controller.state()
        assert state.shared
        assert state.in_flight_by_process == {controller.process_id: 1}
        controller.release(ticket)
        assert controller.state().in_flight == 0
        assert capsys.readouterr().err.count("Redis stopped answering") == 1
    finally:
        controller.close()
        server.terminate()
        server.wait()
