"""A thread's budget in a real Redis, reserved by two real processes running the same thread."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from multiagent.models.budget_redis import NANO, budget_key

pytestmark = pytest.mark.redis
PROC = str(Path(__file__).with_name("_thread_proc.py"))


@pytest.mark.slow
def test_two_processes_on_one_thread_reserve_and_settle_its_budget_in_redis(
    redis_url: str, tmp_path: Path
) -> None:
    budget = 0.01  # one run alone completes within it
    env = dict(os.environ) | {
        "MULTIAGENT_HOME": str(tmp_path),
        # no cache: each process pays for its own calls
        "MULTIAGENT_CACHE__COMPLETION_ENABLED": "false",
        "MULTIAGENT_CACHE__ANALYSIS_ENABLED": "false",
    }
    spec = json.dumps({"url": redis_url, "thread": "t-shared", "budget": budget, "processes": 2})
    procs = [
        subprocess.Popen(
            [sys.executable, PROC, spec],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(2)
    ]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))
    shared = redis.Redis.from_url(redis_url).hgetall(budget_key("thread", "t-shared"))
    # every call of both processes was reserved and settled under the thread's id, once
    assert int(shared[b"cap"]) == round(budget * NANO)
    assert int(shared[b"held"]) == 0
    settled = sum(round(r["spent"] * NANO) for r in results)
    assert settled > 0
    assert int(shared[b"spent"]) == settled
    assert int(shared[b"spent"]) <= round(budget * NANO)
