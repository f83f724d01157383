"""Budgets shared through a real Redis by real processes: never past the cap, a killed
process's hold comes back, a queued batch stops at its budget, a Redis restart loses nothing."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from typer.testing import CliRunner

from multiagent.cli import app
from multiagent.distributed.queue import batch_key, stream_key
from multiagent.errors import BudgetExceededError
from multiagent.models.budget_redis import NANO, RedisBudget, budget_key, to_nano
from tests._procs import free_port
from tests.distributed.conftest import _wait_ready

pytestmark = pytest.mark.redis
PROC = str(Path(__file__).with_name("_budget_proc.py"))
runner = CliRunner()


def _spawn(spec: dict[str, Any]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, PROC, json.dumps(spec)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ),
    )  # fmt: skip


def _result(proc: subprocess.Popen[str]) -> dict[str, Any]:
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    return dict(json.loads(out.strip().splitlines()[-1]))


def _wait(condition: Any, *, seconds: float = 90.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def _project(url: str, *, cap: float, lease_s: float = 600.0) -> RedisBudget:
    return RedisBudget(
        redis.Redis.from_url(url, decode_responses=True), key="multiagent:budget:project",
        cap_usd=cap, daily=True, lease_s=lease_s,
    )  # fmt: skip


def test_four_processes_never_settle_more_than_the_cap_and_admit_exactly_what_fits(
    redis_url: str,
) -> None:
    usd, cap = 0.0003, 0.0003 * 600 + 0.0001  # 600 calls fit, the 601st does not
    procs = [
        _spawn(
            {
                "mode": "hammer",
                "url": redis_url,
                "cap": cap,
                "usd": usd,
                "threads": 4,
                "processes": 4,
            }
        )
        for _ in range(4)
    ]
    results = [_result(proc) for proc in procs]
    report = _project(redis_url, cap=cap).report()
    assert sum(r["settled"] for r in results) == 600
    assert report["settled_calls"] == 600
    assert report["spent_usd"] * NANO == 600 * to_nano(usd) <= to_nano(cap)
    assert report["held_usd"] == 0.0
    assert sum(1 for r in results if r["settled"] > 0) >= 2  # the processes really shared it


def test_a_killed_process_gives_its_hold_back_when_its_lease_ends(redis_url: str) -> None:
    cap = 0.001
    proc = _spawn({"mode": "hold", "url": redis_url, "cap": cap, "usd": cap, "lease_s": 3.0})
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "held"
        budget = _project(redis_url, cap=cap, lease_s=3.0)
        held = budget.report()["held_by_process"]
        assert [owner.rsplit(":", 1)[1] for owner in held] == [str(proc.pid)]
        assert list(held.values()) == [cap]
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
    admitted: list[str] = []

    def reserve_the_whole_cap() -> bool:
        try:
            admitted.append(budget.reserve(cap))
        except BudgetExceededError:
            return False
        return True

    _wait(reserve_the_whole_cap, seconds=60)  # refused while the dead process's lease runs
    report = budget.report()
    assert report["expired_leases"] == 1
    assert list(report["held_by_process"].values()) == [cap]  # now ours
    budget.settle(admitted[0], cap)
    assert budget.report()["spent_usd"] == cap


def _batch_file(tmp_path: Path, count: int) -> Path:
    path = tmp_path / "items.jsonl"
    lines = [
        json.dumps({"id": f"i{n}", "text": f"Mill {n} grinds oats at {300 + n} rpm."})
        for n in range(count)
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.mark.slow
def test_a_queued_batch_on_two_workers_stops_at_its_budget(
    redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MULTIAGENT_RATE_LIMIT__REQUESTS_PER_MINUTE", "600000")
    monkeypatch.setenv("MULTIAGENT_RATE_LIMIT__TOKENS_PER_MINUTE", "600000000")
    # the worst case of about 17 calls, each settling at about a tenth of it: above the 10
    # reservations two workers' slots may hold at once (a reservation waits for a place with
    # them), so the first chunks always fit, and far below what 200 items cost
    budget = 0.03
    queued = runner.invoke(
        app, ["validate", "--batch", str(_batch_file(tmp_path, 200)), "--queue", "qb",
              "--validators", "2", "--budget", str(budget), "--json"],
    )  # fmt: skip
    assert queued.exit_code == 0, queued.output
    batch_id = json.loads(queued.stdout)["batch_id"]
    workers = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "multiagent",
                "worker",
                "--queue",
                "qb",
                "--concurrency",
                "3",
                "--idle-exit",
                "2",
                "--json",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=dict(os.environ),
        )
        for _ in range(2)
    ]
    stats = []
    for proc in workers:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        stats.append(json.loads(out))
    status = runner.invoke(app, ["batch", "status", batch_id, "--json"])
    document = json.loads(status.stdout)
    shared = document["budget"]
    assert document["state"] == "budget_exceeded"
    assert 0 < document["finished"] < 200
    assert shared["held_usd"] == 0.0
    assert shared["spent_usd"] <= budget
    # every call a worker recorded was settled once in Redis: exact, in nano-USD
    assert round(shared["spent_usd"] * NANO) == round(sum(s["spent_usd"] for s in stats) * NANO)
    assert sum(s["chunks"] for s in stats) >= 2
    client = redis.Redis.from_url(redis_url)
    assert client.xlen(stream_key("qb")) == 0  # stopped chunks are acknowledged, not retried
    assert client.hget(batch_key(batch_id), "stopped") == b"budget_exceeded"


class OwnRedis:
    """A redis-server this test stops and starts, keeping its data (AOF) across restarts."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.skip("redis-server is not installed")
        self.proc = subprocess.Popen(
            [binary, "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
             "--appendonly", "yes", "--appendfsync", "always", "--dir", str(self.folder),
             "--logfile", str(self.folder / "log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        _wait_ready(self.url, self.proc, self.folder / "log")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    server = OwnRedis(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.slow
def test_redis_restarted_mid_run_loses_and_double_charges_nothing(
    own_redis: OwnRedis, tmp_path: Path
) -> None:
    stop = tmp_path / "stop"
    spec = {"mode": "steady", "url": own_redis.url, "cap": 10.0, "usd": 0.0001,
            "fraction": 0.5, "stop": str(stop)}  # fmt: skip
    procs = [_spawn(spec) for _ in range(2)]
    budget = _project(own_redis.url, cap=10.0)
    _wait(lambda: budget.report()["settled_calls"] >= 40)
    own_redis.stop()
    for proc in procs:  # each says once that Redis is gone, then spends from its reserve
        assert proc.stderr is not None
        line = proc.stderr.readline()
        assert "Redis lost for the project budget" in line
    time.sleep(0.5)  # calls go on from the local reserve meanwhile (no assert on time)
    own_redis.start()
    budget = _project(own_redis.url, cap=10.0)
    _wait(lambda: budget.report()["settled_calls"] >= 200)
    stop.write_text("stop")
    results = [_result(proc) for proc in procs]
    report = budget.report()
    assert all(r["report"]["redis_lost"] >= 1 for r in results)
    assert sum(r["report"]["local_calls"] for r in results) > 0
    assert all(r["report"]["pending_settlements"] == 0 for r in results)
    assert report["settled_calls"] == sum(r["settled"] for r in results)
    assert round(report["spent_usd"] * NANO) == sum(r["settled_nano"] for r in results)
    assert report["held_usd"] == 0.0


def test_bad_redis_budget_input_is_one_line_exit_2_and_changes_nothing(
    redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _batch_file(tmp_path, 3)
    client = redis.Redis.from_url(redis_url)
    for given in ("-1", "0.0001", "nan"):
        result = runner.invoke(
            app, ["validate", "--batch", str(path), "--queue", "qx", "--budget", given]
        )
        assert result.exit_code == 2, result.output
        assert len(result.stderr.strip().splitlines()) == 1
        assert "--budget" in result.stderr
        assert "Traceback" not in result.output
    assert client.keys("*") == []  # nothing enqueued, no budget created
    monkeypatch.setenv("MULTIAGENT_BUDGET__DAILY_USD", "5")
    monkeypatch.setenv("MULTIAGENT_REDIS_URL", "redis://127.0.0.1:1/0")
    down = runner.invoke(app, ["profile", "--json"])
    assert down.exit_code == 2
    assert "cannot reach Redis at MULTIAGENT_REDIS_URL 'redis://127.0.0.1:1/0'" in down.stderr
    assert len(down.stderr.strip().splitlines()) == 1
    monkeypatch.setenv("MULTIAGENT_REDIS_URL", redis_url)
    shown = runner.invoke(app, ["profile", "--json"])
    assert shown.exit_code == 0, shown.output
    spend = json.loads(shown.stdout)["project_spend"]
    assert spend["store"] == "redis"
    assert spend["daily_usd"] == 5.0
    assert spend["spent_usd"] == 0.0
    assert budget_key("batch", "x").startswith("multiagent:budget:")


def test_a_call_waits_for_holds_and_is_refused_only_by_spend(redis_url: str) -> None:
    """Holds of calls in flight make a call wait, not fail: a worker's queued calls hold their
    worst case, and refusing on holds stopped batches with their budget unspent."""
    import threading

    budget = _project(redis_url, cap=0.0025)
    first, second = budget.reserve(0.001), budget.reserve(0.001)  # 0.002 held of 0.0025
    admitted: list[str] = []
    waiter = threading.Thread(target=lambda: admitted.append(budget.reserve(0.001)))
    waiter.start()
    waiter.join(timeout=0.5)
    assert waiter.is_alive()
    assert admitted == []
    budget.settle(first, 0.0002)  # a call cost far less than its worst case: room again
    waiter.join(timeout=60)
    assert not waiter.is_alive()
    assert len(admitted) == 1
    report = budget.report()
    assert report["spent_usd"] == 0.0002
    assert report["held_usd"] == 0.002
    # settled spend alone leaves no room: refused at once, holds or not
    budget.settle(second, 0.0015)
    with pytest.raises(BudgetExceededError, match="reached"):
        budget.reserve(0.001)  # 0.0017 spent + 0.001 > 0.0025
    budget.release(admitted[0])
    assert budget.report()["held_usd"] == 0.0


def test_a_call_on_an_event_loop_is_refused_at_once_not_left_waiting(redis_url: str) -> None:
    """On an event loop's thread the holds may be coroutines of that same loop: waiting there
    would stop them from ever settling, so the call is refused as before."""
    import asyncio

    # a short lease: were the call to wait, it would be admitted once the hold expires
    budget = _project(redis_url, cap=0.0015, lease_s=2.0)
    held = budget.reserve(0.001)

    async def call() -> None:
        budget.reserve(0.001)  # what the pipeline's ``_agenerate`` does, on the loop

    with pytest.raises(BudgetExceededError, match="held by calls in flight"):
        asyncio.run(asyncio.wait_for(call(), timeout=60))
    budget.release(held)
