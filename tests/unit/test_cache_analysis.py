"""The analysis cache: computed once per content, expiring after its TTL, counted per kind."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from pydantic import BaseModel

from multiagent.models.analysis_cache import AnalysisCache
from multiagent.models.pipeline import ModelPipeline
from multiagent.policies import load_settings


class Verdict(BaseModel):
    valid: bool
    score: float


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def test_identical_content_is_computed_once(tmp_path: Path) -> None:
    cache = AnalysisCache(tmp_path / "a", ttl_s=60)
    calls: list[str] = []

    def judge(text: str) -> Verdict:
        calls.append(text)
        return Verdict(valid=len(text) > 3, score=len(text) / 10)

    first = cache.get_or_compute("verdict", "same text", lambda: judge("same text"))
    again = cache.get_or_compute("verdict", "same text", lambda: judge("same text"))
    other = cache.get_or_compute("verdict", "other", lambda: judge("other"))
    assert first == again == Verdict(valid=True, score=0.9)
    assert other.score == 0.5
    assert calls == ["same text", "other"]
    assert cache.stats()["kinds"]["verdict"] == {"hits": 1, "misses": 2, "expired": 0}


def test_kinds_are_separate_and_structured_content_is_canonical(tmp_path: Path) -> None:
    cache = AnalysisCache(tmp_path / "a", ttl_s=60)
    cache.get_or_compute("verdict", {"a": 1, "b": 2}, lambda: 1)
    assert cache.get_or_compute("verdict", {"b": 2, "a": 1}, lambda: 2) == 1
    assert cache.get_or_compute("summary", {"a": 1, "b": 2}, lambda: 3) == 3
    stats = cache.stats()
    assert stats["kinds"]["verdict"]["hits"] == 1
    assert stats["kinds"]["summary"]["misses"] == 1
    assert stats["total"] == {"hits": 1, "misses": 2, "expired": 0}


def test_stale_entries_are_recomputed_and_counted_as_expired(tmp_path: Path) -> None:
    clock = Clock()
    cache = AnalysisCache(tmp_path / "a", ttl_s=10, clock=clock)
    assert cache.get_or_compute("verdict", "x", lambda: "old") == "old"
    clock.now += 9
    assert cache.get_or_compute("verdict", "x", lambda: "new") == "old"
    clock.now += 2
    assert cache.get_or_compute("verdict", "x", lambda: "new") == "new"
    assert cache.stats()["kinds"]["verdict"] == {"hits": 1, "misses": 1, "expired": 1}


def test_counters_persist_and_async_computes_once(tmp_path: Path) -> None:
    cache = AnalysisCache(tmp_path / "a", ttl_s=60)

    async def compute() -> int:
        await asyncio.sleep(0)
        return 42

    assert asyncio.run(cache.aget_or_compute("k", "c", compute)) == 42
    assert asyncio.run(cache.aget_or_compute("k", "c", compute)) == 42
    cache.close()
    reopened = AnalysisCache(tmp_path / "a", ttl_s=60)
    assert reopened.stats()["kinds"]["k"] == {"hits": 1, "misses": 1, "expired": 0}
    assert reopened.stats()["entries"] == 1


def test_switched_off_by_profile_it_always_computes(tmp_path: Path) -> None:
    settings = load_settings(overrides={"cache.analysis_enabled": False})
    cache = ModelPipeline(settings).analysis_cache
    values = iter([1, 2])
    assert cache.get_or_compute("verdict", "x", lambda: next(values)) == 1
    assert cache.get_or_compute("verdict", "x", lambda: next(values)) == 2
    assert cache.stats()["total"] == {"hits": 0, "misses": 0, "expired": 0}
    with pytest.raises(ValueError):
        AnalysisCache(tmp_path / "b", ttl_s=0)
