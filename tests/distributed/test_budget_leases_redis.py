"""Short budget leases renewed while their process lives, through a real Redis and real
processes: a long call keeps its hold however many leases it lasts, a SIGKILLed process's hold
comes back within one lease, and one renewal per period covers every hold of a process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis

from multiagent.models._budget_leases import lease_keeper
from multiagent.models.budget_redis import RedisBudget, budget_key

pytestmark = pytest.mark.redis
PROC = str(Path(__file__).with_name("_budget_proc.py"))
#: Short enough for a test, long enough for a keeper on a busy machine (renewed every 1 s).
LEASE_S = 3.0


def _spawn(spec: dict[str, Any]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, PROC, json.dumps(spec)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ),
    )  # fmt: skip


def _project(url: str, *, cap: float) -> RedisBudget:
    return RedisBudget(
        redis.Redis.from_url(url, decode_responses=True), key="multiagent:budget:project",
        cap_usd=cap, daily=True, lease_s=LEASE_S,
    )  # fmt: skip


def _throughout(seconds: float, check: Callable[[], None]) -> None:
    """Run ``check`` again and again while at least ``seconds`` pass (no speed is asserted)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        check()
        time.sleep(0.25)
    check()


def test_a_live_process_keeps_its_hold_through_a_long_call_and_a_killed_ones_comes_back(
    redis_url: str,
) -> None:
    cap = 0.001
    proc = _spawn({"mode": "hold", "url": redis_url, "cap": cap, "usd": cap, "lease_s": LEASE_S})
    budget = _project(redis_url, cap=cap)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "held", proc.stderr

        def still_held() -> None:
            report = budget.report()
            assert report["expired_leases"] == 0
            assert {o.rsplit(":", 1)[1]: usd for o, usd in report["held_by_process"].items()} == {
                str(proc.pid): cap
            }

        # the child's call lasts four leases: its keeper renews the hold meanwhile
        _throughout(4 * LEASE_S, still_held)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
    # the dead process renews nothing: a call asking for the whole cap waits for its hold, and
    # is admitted once the lease ends (the timeout only stops a test that would hang)
    admitted: list[str] = []
    waiter = threading.Thread(target=lambda: admitted.append(budget.reserve(cap)), daemon=True)
    waiter.start()
    waiter.join(timeout=120)
    assert len(admitted) == 1, "the killed process's hold was never given back"
    report = budget.report()
    assert report["expired_leases"] == 1
    assert list(report["held_by_process"].values()) == [cap]  # now ours
    budget.settle(admitted[0], cap)
    assert budget.reconcile()
    assert budget.report()["spent_usd"] == cap


def _evalsha_calls(client: redis.Redis) -> int:
    stats: dict[str, dict[str, int]] = client.info("commandstats")  # type: ignore[assignment]
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


def test_one_renewal_per_period_covers_every_hold_of_every_budget(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    budgets = [
        RedisBudget(client, key="multiagent:budget:project", cap_usd=1.0, daily=True,
                    lease_s=LEASE_S),
        RedisBudget(client, key=budget_key("thread", "t1"), cap_usd=1.0, lease_s=LEASE_S),
        RedisBudget(client, key=budget_key("thread", "t2"), cap_usd=1.0, lease_s=LEASE_S),
    ]  # fmt: skip
    held = [(budget, budget.reserve(0.01)) for budget in budgets for _ in range(5)]
    keeper = lease_keeper(client)
    assert len(keeper) == 15
    admin = redis.Redis.from_url(redis_url)

    def counts() -> tuple[int, int]:
        while True:  # a renewal between the two reads: read again
            before = keeper.renewals
            scripts = _evalsha_calls(admin)
            if keeper.renewals == before:
                return before, scripts

    renewals, scripts = counts()
    deadline = time.monotonic() + 120
    while keeper.renewals < renewals + 3:
        assert time.monotonic() < deadline, "the keeper never renewed"
        time.sleep(0.1)
    now_renewals, now_scripts = counts()
    # every renewal was one script for the 15 holds of 3 budgets, and nothing else ran
    assert now_scripts - scripts == now_renewals - renewals
    for budget in budgets:
        assert budget.report()["expired_leases"] == 0
    # settled or released holds are no longer renewed (nor kept in memory)
    for budget, reservation in held[:7]:
        budget.settle(reservation, 0.001)
    for budget, reservation in held[7:]:
        budget.release(reservation)
    for budget in budgets:
        assert budget.reconcile()
    assert len(keeper) == 0
    assert sum(b.report()["held_usd"] for b in budgets) == 0.0
