"""A queued batch whose worker chunk stops mid-item keeps the verdicts it paid for, as a local
batch's does, through the ``openai`` provider against the simulator server on 127.0.0.1.

The chunk is stopped deterministically by the project's daily budget (the worker's calls are
made one at a time, in a known order, and the cap is chosen from each call's cost and worst case
to refuse one call in the middle of an item; see
``tests/integration/test_batch_stop_keeps_paid_verdicts.py``). The item some validators answered
is stored as a partial record, unfinished in ``batch status|results``; the resume's worker asks
only the validators not asked yet. The simulator's ``/sim/stats`` counts what was served: over
the stop and the resume, every call of an uninterrupted batch exactly once, and the same results.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import redis

from multiagent.distributed.deadletter import FinishedChunk, finish_chunks
from multiagent.distributed.queue import batch_key, batch_results, batch_status, enqueue_batch
from tests.distributed._workers import cli, cli_json, work_until_idle
from tests.integration._fault_proxy import served_calls
from tests.integration.test_batch_stop_keeps_paid_verdicts import (
    distinct,
    mid_item_cap,
    whole_batch,
    write_items,
)

pytestmark = pytest.mark.redis


@pytest.fixture
def items_file(tmp_path: Path) -> Path:
    return write_items(tmp_path)


@pytest.mark.parametrize("budget", [None, "1"], ids=["profile-budget", "batch-budget"])
def test_a_queued_chunk_stopped_mid_item_keeps_its_verdicts_and_the_resume_buys_only_the_rest(
    sim: str, items_file: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch, budget: str | None
) -> None:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    # an uninterrupted batch: the results to reach, and what each call cost, in call order
    reference = whole_batch(sim)
    calls = reference.outcome.ledger.records()
    refused, cap = mid_item_cap(reference)

    monkeypatch.setenv("MULTIAGENT_BUDGET__DAILY_USD", repr(cap))
    given = [] if budget is None else ["--budget", budget]
    cli_json("validate", "--batch", str(items_file), "--queue", "qp", "--thread", "qb", *given)
    before = served_calls(sim)
    work_until_idle(client, "qp")
    assert served_calls(sim) - before == refused  # the calls made, each paid once
    # the bakery finished; the mill (and its twin) was part-validated; the dairy never started
    stopped = cli_json("batch", "results", "qb")
    assert stopped["state"] == "budget_exceeded"
    assert [r["id"] for r in stopped["results"]] == ["bakery"]
    assert stopped["unfinished"] == ["mill", "dairy", "mill-again"]
    assert stopped["partial"] == ["mill", "mill-again"]  # their verdicts paid for are kept
    assert stopped["incomplete"] == []
    status = cli_json("batch", "status", "qb")
    assert (status["finished"], status["unfinished_count"], status["partial_count"]) == (1, 3, 2)
    paid = sum(call.cost_usd for call in calls[:refused])
    assert stopped["usage"]["cost_usd"] == pytest.approx(paid, rel=1e-6)
    assert "items not finished yet (2 with the verdicts given kept)" in " ".join(
        cli("batch", "results", "qb").stdout.split()
    )

    monkeypatch.delenv("MULTIAGENT_BUDGET__DAILY_USD")
    resumed = cli_json("validate", "--queue", "qp", "--thread", "qb", "--resume", *given)
    assert resumed["items"] == 3
    before = served_calls(sim)
    stats = work_until_idle(client, "qp")
    # exactly the calls not paid for yet: the mill's validators not asked, the dairy's
    assert served_calls(sim) - before == len(calls) - refused
    assert stats["stored"] == 3  # the mill and its twin finished now, and the dairy

    back = cli_json("batch", "results", "qb")
    assert back["state"] == "completed"
    assert back["unfinished"] == back["partial"] == back["incomplete"] == []
    # every item decided as the uninterrupted batch decided it, on the same verdicts
    assert back["results"] == [dict(result) for result in reference.results]
    assert distinct(back["verdicts"]) == distinct(reference.verdicts)  # type: ignore[arg-type]
    assert back["usage"]["calls"] - stopped["usage"]["calls"] == len(calls) - refused
    assert back["usage"]["cost_usd"] == pytest.approx(sum(c.cost_usd for c in calls), rel=1e-6)
    assert client.exists(batch_key("qb", "partial")) == 0  # finished items leave no partial


def test_the_store_keeps_a_partial_record_apart_until_its_item_is_finished(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    items = [{"id": "a", "text": "The mill grinds rye."}, {"id": "b", "text": "Milk daily."}]
    queued = enqueue_batch(client, queue="qs", items=items, validators=["x", "y"], threshold=0.5)
    batch_id = queued.batch_id

    def end(attempt: str, *, finished: list[str], partial: list[str]) -> int:
        chunk = FinishedChunk(
            entry_id="0-1", batch_id=batch_id, chunk_id="c0", attempt=attempt,
            records=[(i, json.dumps({"id": i})) for i in finished],
            partial=[(i, json.dumps({"id": i, "kept": attempt})) for i in partial],
            usage_json="[]", ack=False,
        )  # fmt: skip
        return finish_chunks(client, "qs", [chunk])[0]

    assert end("one", finished=[], partial=["a"]) == 0  # kept, not counted as finished
    status = batch_status(client, batch_id)
    assert (status["finished"], status["partial_count"], status["state"]) == (0, 1, "running")
    assert batch_results(client, batch_id)["partial"] == ["a"]
    assert end("two", finished=[], partial=["a"]) == 0  # a later attempt's replaces it
    assert json.loads(client.hget(batch_key(batch_id, "partial"), "a") or "")["kept"] == "two"
    assert end("three", finished=["a"], partial=[]) == 1  # finished: the partial one goes
    assert client.hlen(batch_key(batch_id, "partial")) == 0
    assert end("four", finished=[], partial=["a"]) == 0  # never over a finished item
    assert client.hlen(batch_key(batch_id, "partial")) == 0
    assert batch_status(client, batch_id)["finished"] == 1
