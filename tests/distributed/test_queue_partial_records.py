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
from typing import Any

import pytest
import redis

from multiagent.distributed.deadletter import FinishedChunk, finish_chunks
from multiagent.distributed.queue import batch_key, batch_results, batch_status, enqueue_batch
from multiagent.distributed.worker import QueueWorker
from multiagent.graphs.batch import BatchValidation, batch_cross_validate
from multiagent.nodes.context import build_context
from multiagent.nodes.validator import verdict_worst_case_usd
from multiagent.policies import load_settings
from tests.distributed._workers import cli
from tests.integration._fault_proxy import served_calls
from tests.integration.test_batch_stop_keeps_paid_verdicts import (
    ITEMS,
    TEXTS,
    _cap_refusing,
    write_items,
)

pytestmark = pytest.mark.redis


@pytest.fixture
def items_file(tmp_path: Path) -> Path:
    return write_items(tmp_path)


def _work(client: redis.Redis, queue: str) -> dict[str, Any]:
    """Run a worker (with the settings of now) on ``queue`` until it is empty; its stats."""
    worker = QueueWorker(client, queue=queue, context=build_context(load_settings()))
    return worker.run(idle_exit_s=1.0).as_dict()


def _json(*args: str) -> dict[str, Any]:
    result = cli(*args, "--json")
    assert result.exit_code == 0, result.output
    return dict(json.loads(result.stdout))


def _mid_item_cap(reference: BatchValidation) -> tuple[int, float]:
    """A daily cap that refuses a call of the mill's text after at least one of its validators
    answered, and that call's index (see :func:`_cap_refusing`)."""
    calls = reference.outcome.ledger.records()
    validators = reference.outcome.values["validators"]
    context = build_context(load_settings())
    worst = [
        verdict_worst_case_usd(context, context.agents[name], text)
        for text in TEXTS
        for name in validators
    ]
    assert [call.agent for call in calls] == validators * 3  # one text's validators, then the next
    per_text = len(validators)
    return _cap_refusing(
        [call.cost_usd for call in calls], worst, range(per_text + 1, 2 * per_text)
    )


def _distinct(verdicts: list[dict[str, Any]]) -> list[str]:
    """Each verdict once (a queued batch lists a text's verdicts under each of its items)."""
    return sorted({json.dumps(verdict, sort_keys=True) for verdict in verdicts})


@pytest.mark.parametrize("budget", [None, "1"], ids=["profile-budget", "batch-budget"])
def test_a_queued_chunk_stopped_mid_item_keeps_its_verdicts_and_the_resume_buys_only_the_rest(
    sim: str, items_file: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch, budget: str | None
) -> None:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    # an uninterrupted batch: the results to reach, and what each call cost, in call order
    reference = batch_cross_validate(ITEMS, max_concurrency=1, thread_id="whole")  # type: ignore[arg-type]
    calls = reference.outcome.ledger.records()
    assert len(calls) == served_calls(sim)
    refused, cap = _mid_item_cap(reference)

    monkeypatch.setenv("MULTIAGENT_BUDGET__DAILY_USD", repr(cap))
    given = [] if budget is None else ["--budget", budget]
    _json("validate", "--batch", str(items_file), "--queue", "qp", "--thread", "qb", *given)
    before = served_calls(sim)
    _work(client, "qp")
    assert served_calls(sim) - before == refused  # the calls made, each paid once
    # the bakery finished; the mill (and its twin) was part-validated; the dairy never started
    stopped = _json("batch", "results", "qb")
    assert stopped["state"] == "budget_exceeded"
    assert [r["id"] for r in stopped["results"]] == ["bakery"]
    assert stopped["unfinished"] == ["mill", "dairy", "mill-again"]
    assert stopped["partial"] == ["mill", "mill-again"]  # their verdicts paid for are kept
    assert stopped["incomplete"] == []
    status = _json("batch", "status", "qb")
    assert (status["finished"], status["unfinished_count"], status["partial_count"]) == (1, 3, 2)
    paid = sum(call.cost_usd for call in calls[:refused])
    assert stopped["usage"]["cost_usd"] == pytest.approx(paid, rel=1e-6)
    assert "items not finished yet (2 with the verdicts given kept)" in " ".join(
        cli("batch", "results", "qb").stdout.split()
    )

    monkeypatch.delenv("MULTIAGENT_BUDGET__DAILY_USD")
    resumed = _json("validate", "--queue", "qp", "--thread", "qb", "--resume", *given)
    assert resumed["items"] == 3
    before = served_calls(sim)
    stats = _work(client, "qp")
    # exactly the calls not paid for yet: the mill's validators not asked, the dairy's
    assert served_calls(sim) - before == len(calls) - refused
    assert stats["stored"] == 3  # the mill and its twin finished now, and the dairy

    back = _json("batch", "results", "qb")
    assert back["state"] == "completed"
    assert back["unfinished"] == back["partial"] == back["incomplete"] == []
    # every item decided as the uninterrupted batch decided it, on the same verdicts
    assert back["results"] == [dict(result) for result in reference.results]
    assert _distinct(back["verdicts"]) == _distinct(reference.verdicts)  # type: ignore[arg-type]
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
