"""The completion and analysis caches in a real Redis, shared by real processes: exact shared
counters, expiry on the server's clock, a missing Redis refused at start."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import redis
from langchain_core.messages import AIMessage
from langchain_core.outputs import ChatGeneration

from multiagent.models.analysis_cache import MISSING, content_key, open_analysis_cache
from multiagent.models.completion_cache import cache_key, open_completion_cache
from tests._procs import free_port

pytestmark = pytest.mark.redis
PROC = str(Path(__file__).with_name("_cache_proc.py"))
ENTRY = "multiagent:cache:{completions}:e:"


def _env(url: str, home: Path) -> dict[str, str]:
    return dict(os.environ) | {"MULTIAGENT_REDIS_URL": url, "MULTIAGENT_HOME": str(home)}


def _cli(args: list[str], *, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "multiagent", *args],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )  # fmt: skip


def test_two_processes_replaying_a_workload_report_the_true_hit_rate_exactly(
    redis_url: str, tmp_path: Path
) -> None:
    spec: dict[str, Any] = {"url": redis_url, "lookups": 300, "prompts": 40, "processes": 2}
    procs = [
        subprocess.Popen(
            [sys.executable, PROC, json.dumps(spec | {"seed": seed, "home": str(tmp_path / h)})],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=_env(redis_url, tmp_path / h),
        )
        for seed, h in ((1, "a"), (2, "b"))  # two homes: nothing shared but Redis
    ]
    seen = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        seen.append(json.loads(out))
    hits = sum(s["hits"] for s in seen)
    misses = sum(s["misses"] for s in seen)
    assert hits + misses == 600
    assert misses >= 40  # every prompt missed at least once
    shown = _cli(["metrics", "show", "--json"], env=_env(redis_url, tmp_path / "c"))
    assert shown.returncode == 0, shown.stderr
    cache = json.loads(shown.stdout)["cache"]
    assert cache["completion"]["store"] == "redis"
    assert (cache["completion"]["hits"], cache["completion"]["misses"]) == (hits, misses)
    assert cache["completion"]["hit_rate"] == hits / (hits + misses)
    # no two processes stored the same prompt as two entries: the keys are the embedded ones
    assert cache["completion"]["entries"] == 40
    client = redis.Redis.from_url(redis_url)
    assert client.exists(ENTRY + cache_key("prompt 0", "sim:model")) == 1
    a_hits = sum(s["analysis_hits"] for s in seen)
    a_misses = sum(s["analysis_misses"] for s in seen)
    assert (cache["analysis"]["hits"], cache["analysis"]["misses"]) == (a_hits, a_misses)
    assert cache["analysis"]["entries"] == 40


def test_completion_entries_expire_on_the_servers_clock(redis_url: str, tmp_path: Path) -> None:
    cache = open_completion_cache(tmp_path, ttl_s=600, redis_url=redis_url)
    cache.clear(counters=True)
    cache.update("p", "m", [ChatGeneration(message=AIMessage(content="a"))])
    client = redis.Redis.from_url(redis_url)
    key = ENTRY + cache_key("p", "m")
    assert 0 < client.pttl(key) <= 600_000  # the TTL is Redis's
    assert cache.lookup("p", "m") is not None
    client.pexpire(key, 1)
    while client.exists(key):  # Redis's clock decides; wait for it, assert nothing on time
        pass
    assert cache.lookup("p", "m") is None
    stats = cache.stats()
    assert (stats.hits, stats.misses, stats.entries) == (1, 1, 0)


def test_an_analysis_older_than_its_ttl_is_counted_expired_and_recomputed(
    redis_url: str, tmp_path: Path
) -> None:
    cache = open_analysis_cache(tmp_path, ttl_s=60, redis_url=redis_url)
    cache.clear(counters=True)
    cache.store("verdict", "text", "ok")
    key = "multiagent:cache:{analysis}:e:" + content_key("verdict", "text")
    client = redis.Redis.from_url(redis_url)
    assert 60_000 < client.pttl(key) <= 120_000  # kept twice the TTL, fresh for the first
    assert cache.lookup("verdict", "text") == "ok"
    client.pexpire(key, 60_000)  # aged past the TTL, on the server's clock
    assert cache.lookup("verdict", "text") is MISSING
    assert client.exists(key) == 0
    assert cache.lookup("verdict", "text") is MISSING
    assert cache.stats()["kinds"]["verdict"] == {"hits": 1, "misses": 1, "expired": 1}


@pytest.mark.parametrize(
    "args", [["metrics", "show", "--json"], ["validate", "some text to check", "--json"]]
)
def test_a_missing_redis_at_start_is_one_line_and_exit_2(tmp_path: Path, args: list[str]) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    done = _cli(args, env=_env(url, tmp_path))
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "cannot reach Redis" in lines[0]
    assert "127.0.0.1" in lines[0]
    assert done.stdout == ""


def test_bench_cache_keeps_to_a_fresh_cache_of_its_own(redis_url: str) -> None:
    # with the shared cache, a second run read the first run's answers and counts
    from multiagent.bench.cache import run_cache_bench

    for _ in range(2):
        result = run_cache_bench(requests=20, repeat_share=0.3)
        assert result.reported_hits == result.true_hits == result.ledger_cache_hits == 6
        assert result.reported_misses == 14
    with redis.Redis.from_url(redis_url) as client:
        assert client.dbsize() == 0
