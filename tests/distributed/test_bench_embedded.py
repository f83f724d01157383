"""Benchmarks of the embedded defaults stay on them with ``MULTIAGENT_REDIS_URL`` set: they
neither read nor write the shared Redis (its cache would answer a run from an earlier one)."""

from __future__ import annotations

import pytest
import redis

from multiagent.bench.batch import run_batch_bench
from multiagent.bench.overhead import run_overhead_bench

pytestmark = pytest.mark.redis


def test_bench_overhead_and_batch_leave_the_shared_redis_alone(redis_url: str) -> None:
    run_overhead_bench(iterations=1, warmup=0)
    result = run_batch_bench(items=2, concurrency=2, latency_s=0.001, sequential=False)
    assert result.batch.succeeded == 2
    with redis.Redis.from_url(redis_url) as client:
        assert client.keys("*") == []
