"""A queued batch's tight budget is spent on finishing items: workers on several processes start
an item only once Redis holds its whole worst case, as a local batch does."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from multiagent.models.budget_redis import NANO, RedisBudget, budget_key, to_nano
from tests.distributed._workers import Workers, cli, stop_a_tight_batch, wait_until

pytestmark = pytest.mark.redis
PROC = str(Path(__file__).with_name("_budget_proc.py"))

#: About three items' worst cases (each validator call reserves its whole output allowance,
#: several times what it costs): enough to finish some of the twelve, far from all.
BUDGET = 0.003


@pytest.mark.slow
def test_workers_sharing_a_tight_budget_finish_whole_items_and_pay_for_no_half_validated_one(
    workers: Workers, redis_url: str, tmp_path: Path
) -> None:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    procs = stop_a_tight_batch(workers, client, tmp_path, queue="qa", budget=BUDGET)
    stats = [workers.stop(proc) for proc in procs]

    results = json.loads(cli("batch", "results", "tight", "--json").stdout)
    status = json.loads(cli("batch", "status", "tight", "--json").stdout)
    finished = results["finished"]
    assert status["state"] == results["state"] == "budget_exceeded"
    assert 0 < finished < 12, "the budget covered whole items, yet none finished"
    # every call paid for went to an item that finished: none was left part-validated
    assert results["usage"]["calls"] == 2 * finished
    assert all(result["responded"] == 2 for result in results["results"])
    assert len(results["verdicts"]) == 2 * finished
    assert results["unfinished_count"] == 12 - finished
    assert "cannot finish the next item" in status["last_error"]
    shared = status["budget"]
    assert shared["spent_usd"] <= BUDGET
    assert shared["held_usd"] == 0.0  # every item's hold was closed
    assert shared["settled_calls"] == 2 * finished
    assert round(shared["spent_usd"] * NANO) == round(sum(s["spent_usd"] for s in stats) * NANO)
    assert sum(1 for s in stats if s["stored"]) >= 1


def test_a_killed_workers_item_hold_ends_with_its_lease_and_its_paid_call_still_counts(
    redis_url: str,
) -> None:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    client.hset(budget_key("batch", "killed"), "cap", to_nano(0.01))
    worst, cost = 0.004, 0.0005
    spec = {"mode": "item", "url": redis_url, "batch": "killed", "usd": worst, "cost": cost,
            "lease_s": 2.0}  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, PROC, json.dumps(spec)], stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, env=dict(os.environ),
    )  # fmt: skip
    budget = RedisBudget(client, key=budget_key("batch", "killed"), cap_usd=None)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "held", proc.stderr
        alive = budget.report()
        # the call drew on the item's hold: spent, and taken off what the item holds
        assert (alive["spent_usd"], alive["settled_calls"]) == (cost, 1)
        assert alive["held_usd"] == pytest.approx(worst - cost, abs=1e-9)
        assert [owner.rsplit(":", 1)[1] for owner in alive["held_by_process"]] == [str(proc.pid)]
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
    # all the room the killed worker's item held comes back once its lease ends
    rest: list[str | None] = [None]

    def the_rest_fits() -> bool:
        rest[0] = budget.try_reserve(0.01 - cost)
        return rest[0] is not None

    wait_until(the_rest_fits, seconds=60)
    dead = budget.report()
    assert dead["expired_leases"] == 1
    assert (dead["spent_usd"], dead["settled_calls"]) == (cost, 1)  # paid, so still counted
    budget.release(str(rest[0]))


def test_a_call_drawn_from_two_item_holds_is_one_settled_call(redis_url: str) -> None:
    from multiagent.distributed.worker_admission import HeldItems

    client = redis.Redis.from_url(redis_url, decode_responses=True)
    client.hset(budget_key("batch", "split"), "cap", to_nano(0.01))
    budget = RedisBudget(client, key=budget_key("batch", "split"), cap_usd=None)
    first, second = budget.reserve(0.001), budget.reserve(0.002)
    held = HeldItems(budget, [(first, to_nano(0.001)), (second, to_nano(0.002))])
    call = held.reserve(0.0015)
    held.settle(call, 0.0015)  # more than the first hold has: the rest comes from the second
    held.close()
    report = budget.report()
    assert (report["spent_usd"], report["settled_calls"]) == (0.0015, 1)
    assert report["held_usd"] == 0.0
