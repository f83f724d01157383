"""A queued batch's usage counts every attempt's calls: what `batch results` says was spent."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
import redis
from typer.testing import CliRunner

from multiagent.cli import app
from multiagent.distributed import worker_items, worker_store
from multiagent.distributed.queue import batch_results, batch_status
from multiagent.distributed.worker import QueueWorker
from multiagent.nodes.context import build_context
from multiagent.policies import load_settings
from tests.distributed._workers import FAST

pytestmark = pytest.mark.redis


def _enqueue(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, grain: str) -> str:
    """Queue four items (two validators each, a budget of $5) on ``q1``; return the batch id.
    Texts of their own grain, so no other test's answers are in the caches."""
    for name, value in FAST.items():
        monkeypatch.setenv(name, value)
    path = tmp_path / "items.jsonl"
    lines = [json.dumps({"id": f"i{n}", "text": f"Oven {n} bakes {grain}."}) for n in range(4)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    queued = CliRunner().invoke(
        app,
        ["validate", "--batch", str(path), "--queue", "q1", "--validators", "2", "--budget", "5",
         "--json"],
    )  # fmt: skip
    assert queued.exit_code == 0, queued.output
    return str(json.loads(queued.stdout)["batch_id"])


def test_a_chunk_retried_for_an_unfinished_item_keeps_both_attempts_usage(
    redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the first attempt leaves one item unfinished (no validator answered it); the retry runs
    # that item alone. Both attempts' calls were paid: the usage kept one of them only
    batch_id = _enqueue(tmp_path, monkeypatch, grain="spelt")
    real_run_chunk = worker_items.run_chunk
    attempts: list[list[str]] = []

    def first_leaves_one(chunk_id: str, items: list[Any], **kwargs: Any) -> Any:
        attempts.append([item["id"] for item in items])
        if len(attempts) > 1:
            return real_run_chunk(chunk_id, items, **kwargs)
        outcome = real_run_chunk(chunk_id, items[:-1], **kwargs)
        return dataclasses.replace(
            outcome, status="failed", unfinished=[items[-1]["id"]], error="no answer"
        )

    monkeypatch.setattr(worker_items, "run_chunk", first_leaves_one)
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    worker = QueueWorker(
        client, queue="q1", context=build_context(load_settings()), claim_idle_s=0.2
    )
    stats = worker.run(idle_exit_s=1.5)
    assert attempts == [["i0", "i1", "i2", "i3"], ["i3"]]
    assert stats.stored == 4
    results = batch_results(client, batch_id)
    assert results["finished"] == 4
    assert results["usage"]["calls"] == 8  # 3 items, then 1, by 2 validators
    budget = batch_status(client, batch_id)["budget"]
    assert results["usage"]["cost_usd"] == pytest.approx(budget["spent_usd"], abs=1e-9)
    assert stats.spent_nano / 1e9 == pytest.approx(budget["spent_usd"], abs=1e-9)


def test_a_chunk_whose_store_failed_is_stored_when_redis_answers_not_run_again(
    redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Redis went away as a chunk ended: its finished items were dropped and the entry run again
    # once reclaimed, paying for the calls twice and keeping only the second (cached) usage
    batch_id = _enqueue(tmp_path, monkeypatch, grain="barley")
    real_run_chunk, real_finish = worker_items.run_chunk, worker_store.finish_chunks
    runs: list[list[str]] = []
    stores: list[int] = []

    def counting(chunk_id: str, items: list[Any], **kwargs: Any) -> Any:
        runs.append([item["id"] for item in items])
        return real_run_chunk(chunk_id, items, **kwargs)

    def first_store_lost(client: Any, queue: str, chunks: Any) -> Any:
        stores.append(len(chunks))
        if len(stores) == 1:
            raise redis.ConnectionError("Connection refused")
        return real_finish(client, queue, chunks)

    monkeypatch.setattr(worker_items, "run_chunk", counting)
    monkeypatch.setattr(worker_store, "finish_chunks", first_store_lost)
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    worker = QueueWorker(
        client, queue="q1", context=build_context(load_settings()), claim_idle_s=0.2
    )
    stats = worker.run(idle_exit_s=1.5)
    assert runs == [["i0", "i1", "i2", "i3"]]  # run once
    assert len(stores) == 2  # stored when Redis answered again
    assert stats.stored == 4
    results = batch_results(client, batch_id)
    assert results["finished"] == 4
    assert results["usage"]["calls"] == 8
    budget = batch_status(client, batch_id)["budget"]
    assert results["usage"]["cost_usd"] == pytest.approx(budget["spent_usd"], abs=1e-9)


def test_a_queued_batch_answered_from_the_analysis_cache_reports_those_hits(
    redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the same items queued twice: the second batch's verdicts all come from the analysis
    # cache (in Redis). Its usage said 0 calls and 0 cache hits, as if nothing answered it
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    documents = []
    for _ in range(2):
        batch_id = _enqueue(tmp_path, monkeypatch, grain="oats")
        worker = QueueWorker(
            client, queue="q1", context=build_context(load_settings()), claim_idle_s=0.2
        )
        assert worker.run(idle_exit_s=1.5).stored == 4
        shown = CliRunner().invoke(app, ["batch", "results", batch_id, "--json"])
        assert shown.exit_code == 0, shown.output
        documents.append(json.loads(shown.stdout))
    first, second = (document["usage"] for document in documents)
    assert (first["calls"], first["analysis_cache_hits"]) == (8, 0)
    # nothing sent, the completion cache never asked: one analysis-cache hit per verdict
    assert (second["calls"], second["cache_hits"], second["analysis_cache_hits"]) == (0, 0, 8)
    assert [r["cached"] for r in documents[1]["results"]] == [True] * 4
    metrics = CliRunner().invoke(app, ["metrics", "show", "--json"])
    assert metrics.exit_code == 0, metrics.output
    analysis = json.loads(metrics.stdout)["cache"]["analysis"]
    assert (analysis["hits"], analysis["misses"]) == (8, 8)  # the batches' figures, once each
