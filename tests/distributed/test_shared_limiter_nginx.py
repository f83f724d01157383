"""No 429 storm across processes sharing a limit nobody names: nginx's ``limit_req`` in front.

The Redis twin of ``tests/integration/test_blind_rate_limit_nginx.py``: nginx stands in front of
the simulator as a provider's gateway would (a leaky bucket of 6 requests per second for every
client, 429 above it, no rate-limit headers, no Retry-After), and several processes pace their
calls to it through one Redis-shared controller that starts far above that rate. What nginx
answered is read from its own access log; the workers' retries must be its 429s.

A 429 with no Retry-After pauses nothing: after the cut it causes, the new pace's first slot is
one interval of it after the last send by any process (``APPLY``'s spaced rebook), as in one
process. With the first slot at once, each refusal let the next waiting request go at once,
refused in turn: on the first refusals a wall of them (18 within 40 ms), over a quarter of
attempts.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from multiagent.models._bp_redis_lua import APPLY
from tests._nginx import chat_statuses, simulator_behind_nginx
from tests.distributed.test_shared_limiter import _run_workers
from tests.distributed.test_shared_limiter_lua import K, _acquire, _init

pytestmark = pytest.mark.redis

PROCESSES = 2
LOOPS = 3
CALLS = 10
RATE = 6


@pytest.mark.parametrize(("rebook", "first"), [(1, "go"), (2, "wait")])
def test_a_spaced_rebook_books_the_first_slot_one_interval_after_the_last_send(
    redis_url: str, rebook: int, first: str
) -> None:
    """Rebooked after a 429 that named no pause (2), the first slot of the new pace (0.1 req/s)
    is 10 s after the last send; a plain rebook (1) lets the next request go at once."""
    with redis.Redis.from_url(redis_url, decode_responses=True) as client:
        _init(client, rate=1000.0)
        sent = _acquire(client, "p#0")
        assert sent[0] == "go"
        assert client.eval(APPLY, 2, K.state, K.gate, "0", rebook, "", "rate", "0.1") == 1
        verdict, due, *_ = _acquire(client, "p#1")
    assert verdict == first
    if verdict == "wait":
        assert float(due) == pytest.approx(float(sent[4]) + 10.0, abs=0.05)


@pytest.mark.slow
def test_processes_sharing_a_blind_limit_through_nginx_find_it_without_a_429_storm(
    redis_url: str, tmp_path: Path
) -> None:
    with simulator_behind_nginx(tmp_path / "nginx", rate=RATE) as (url, log):
        # each process starts at 16 req/s with 3 in flight: together far above nginx's rate
        results = _run_workers(
            redis_url, url, processes=PROCESSES, loops=LOOPS, calls=CALLS, rps=16.0
        )
    statuses = chat_statuses(log)
    print(f"\nshared limiter through nginx: {dict(statuses)}")
    assert set(statuses) <= {"200", "429"}, statuses
    assert statuses["200"] == sum(r["ok"] for r in results) == PROCESSES * LOOPS * CALLS
    refused = statuses["429"]
    assert sum(r["rate_limited"] for r in results) == refused  # every 429 was retried, once
    assert max(r["processes"] for r in results) == PROCESSES  # they shared one limit
    # a handful: the first sends, at the starting pace, and a probe above the rate now and
    # then (measured 5-8 of ~65 attempts, on two busy cores too); were a refusal that named no
    # pause to let the next waiting request go at once, each would be refused in turn, a wall
    # of 429s driving the pace to its floor (22 of 82)
    assert refused <= 0.18 * (refused + statuses["200"]), statuses
