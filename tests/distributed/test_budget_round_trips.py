"""A Redis budget's round trips: a settlement rides with the next reservation, exactly once."""

from __future__ import annotations

import time

import pytest
import redis

from multiagent.errors import BudgetExceededError
from multiagent.models.budget_redis import NANO, RedisBudget, budget_key, to_nano

pytestmark = pytest.mark.redis


def _evalsha_calls(client: redis.Redis) -> int:
    stats: dict[str, dict[str, int]] = client.info("commandstats")  # type: ignore[assignment]
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


def _budget(url: str, *, cap: float) -> RedisBudget:
    client = redis.Redis.from_url(url, decode_responses=True)
    return RedisBudget(client, key=budget_key("batch", "b1"), cap_usd=cap, label="batch budget")


def test_each_call_costs_one_script_and_every_settlement_counts_exactly_once(
    redis_url: str,
) -> None:
    budget = _budget(redis_url, cap=1.0)
    admin = redis.Redis.from_url(redis_url)
    costs = [0.000123 * (n % 7 + 1) for n in range(50)]
    budget.settle(budget.reserve(0.01), costs[0])  # scripts loaded before counting
    admin.config_resetstat()
    for cost in costs[1:]:
        budget.settle(budget.reserve(0.01), cost)
    sent = _evalsha_calls(admin)
    report = budget.report()  # sends the last settlement first
    assert sent <= len(costs) - 1  # one script per call: reserve, with the last settlement
    assert report["settled_calls"] == len(costs)
    assert round(report["spent_usd"] * NANO) == sum(to_nano(c) for c in costs)
    assert report["held_usd"] == 0.0
    budget.close()


def test_a_settlement_no_reservation_follows_reaches_redis_on_its_own(redis_url: str) -> None:
    budget = _budget(redis_url, cap=1.0)
    other = _budget(redis_url, cap=1.0)  # another process's view
    budget.settle(budget.reserve(0.01), 0.004)
    deadline = time.monotonic() + 30
    while other.report()["settled_calls"] < 1:
        assert time.monotonic() < deadline, "the settlement was never sent"
        time.sleep(0.01)
    seen = other.report()
    assert seen["spent_usd"] == 0.004
    assert seen["held_usd"] == 0.0


def test_a_settlement_not_yet_sent_keeps_its_reservation_held_for_the_others(
    redis_url: str,
) -> None:
    budget = _budget(redis_url, cap=0.03)
    other = _budget(redis_url, cap=0.03)
    first = budget.reserve(0.01)
    second = budget.reserve(0.01)
    budget.settle(first, 0.001)  # kept for a moment: its 0.01 stays held meanwhile
    # whatever the timing, the other process never sees more room than the cap allows
    report = other.report()
    assert report["spent_usd"] + report["held_usd"] >= 0.011
    other.settle(other.reserve(0.01), 0.01)
    with pytest.raises(BudgetExceededError, match="reached"):
        other.reserve(0.02)  # 0.03 - (0.01 settled + 0.001 or 0.01) - 0.01 held < 0.02
    budget.settle(second, 0.001)
    final = other.report() if budget.reconcile() else {}
    assert round(final["spent_usd"] * NANO) == to_nano(0.012)
