"""A queued batch whose items one validator failed after retries, run by a worker through the
``openai`` provider against the simulator server on 127.0.0.1, and what ``--resume`` then runs.

As a single run's and a local batch's: the others decide the item, ``batch status|results`` name
it incomplete with the command that completes it, and that resume asks only the failed
validator again, keeping the verdicts given. A proxy in front of the simulator
(:mod:`tests.integration._fault_proxy`) fails the chosen validator on the chosen text; the
simulator's ``/sim/stats`` counts what was served.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from multiagent.distributed.worker import QueueWorker
from multiagent.nodes.context import build_context
from multiagent.policies import load_settings
from tests.distributed._workers import FAST, cli
from tests.integration._fault_proxy import (
    ITEMS,
    FaultProxy,
    served_calls,
    served_through_proxy,
)

pytestmark = pytest.mark.redis


@pytest.fixture
def served(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, FaultProxy]]:
    """:func:`~tests.integration._fault_proxy.served_through_proxy`, two attempts per call."""
    for name, value in FAST.items():
        monkeypatch.setenv(name, value)
    with served_through_proxy(monkeypatch) as served:
        yield served


def _work(client: redis.Redis, queue: str) -> None:
    """Run a worker on ``queue`` until it is empty."""
    QueueWorker(client, queue=queue, context=build_context(load_settings())).run(idle_exit_s=1.0)


def _json(*args: str) -> dict[str, Any]:
    result = cli(*args, "--json")
    assert result.exit_code == 0, result.output
    return dict(json.loads(result.stdout))


def _by_id(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {result["id"]: result for result in document["results"]}


def test_a_queued_batch_resume_asks_only_the_failed_validator_and_keeps_the_verdicts(
    served: tuple[str, FaultProxy], redis_url: str, tmp_path: Path
) -> None:
    sim, proxy = served
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    path = tmp_path / "items.jsonl"
    path.write_text("".join(json.dumps(item) + "\n" for item in ITEMS), encoding="utf-8")
    proxy.fail("completeness", text="grinds rye")  # one validator, on one text (two items)
    _json("validate", "--batch", str(path), "--queue", "qc", "--thread", "qb")
    _work(client, "qc")
    assert served_calls(sim) == 3 * 3 - 1
    assert proxy.refused == {"completeness": 2}

    first = _json("batch", "results", "qb")
    assert first["state"] == "completed"
    assert (first["incomplete"], first["incomplete_count"]) == (["mill", "mill-again"], 2)
    results = _by_id(first)
    assert (results["mill"]["responded"], results["mill"]["failed"]) == (2, ["completeness"])
    assert [results[i]["failed"] for i in ("bakery", "dairy")] == [[], []]
    assert _json("batch", "status", "qb")["incomplete_count"] == 2
    # the status names them and the command that completes them, as a local batch does
    status = " ".join(cli("batch", "status", "qb").stdout.split())
    assert "4/4 items (2 incomplete)" in status
    assert (
        "2 items incomplete (validators gave no verdict); --resume asks only those validators "
        "again: multiagent validate --queue qc --thread qb --resume"
    ) in status

    proxy.heal()
    resumed = _json("validate", "--queue", "qc", "--thread", "qb", "--resume")
    assert (resumed["items"], resumed["incomplete"], resumed["chunks"]) == (0, 2, 1)
    _work(client, "qc")
    # completeness on the mill's text, once for both items; nothing else paid again
    assert served_calls(sim) == 8 + 1
    assert proxy.forwarded == {"factual_accuracy": 3, "logical_consistency": 3, "completeness": 3}

    back = _json("batch", "results", "qb")
    assert (back["state"], back["incomplete"], back["incomplete_count"]) == ("completed", [], 0)
    results = _by_id(back)
    for item in ("mill", "mill-again"):
        assert (results[item]["responded"], results[item]["failed"]) == (3, [])
    for item in ("bakery", "dairy"):  # fully decided: untouched
        assert results[item] == _by_id(first)[item]
    kept = [v for v in first["verdicts"] if v["validator"] != "completeness"]
    assert all(verdict in back["verdicts"] for verdict in kept)
    assert len({(v["key"], v["validator"]) for v in back["verdicts"]}) == 9
    assert back["usage"]["calls"] - first["usage"]["calls"] == 1
    assert "incomplete" not in cli("batch", "status", "qb").stdout

    # nothing left to complete: refused, with why
    again = cli("validate", "--queue", "qc", "--thread", "qb", "--resume")
    assert again.exit_code == 2, again.output
    assert "is completed, not stopped on its budget, and has no incomplete items" in again.stderr


def test_a_budgeted_queued_batch_completes_under_its_budget_without_a_new_one(
    served: tuple[str, FaultProxy], redis_url: str, tmp_path: Path
) -> None:
    sim, proxy = served
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    path = tmp_path / "items.jsonl"
    path.write_text("".join(json.dumps(item) + "\n" for item in ITEMS), encoding="utf-8")
    proxy.fail("completeness", text="grinds rye")
    _json("validate", "--batch", str(path), "--queue", "qd", "--thread", "qe", "--budget", "1")
    _work(client, "qd")
    assert _json("batch", "results", "qe")["incomplete"] == ["mill", "mill-again"]
    spent = _json("batch", "status", "qe")["budget"]["spent_usd"]

    proxy.heal()
    # its budget has room: the cap stays, the failed validator's call is admitted under it
    resumed = _json("validate", "--queue", "qd", "--thread", "qe", "--resume")
    assert (resumed["incomplete"], resumed["budget_usd"]) == (2, None)
    _work(client, "qd")
    assert served_calls(sim) == 8 + 1
    back = _json("batch", "results", "qe")
    assert (back["state"], back["incomplete"]) == ("completed", [])
    budget = _json("batch", "status", "qe")["budget"]
    assert (budget["budget_usd"], budget["held_usd"]) == (1.0, 0.0)
    assert spent < budget["spent_usd"] == pytest.approx(back["usage"]["cost_usd"], abs=1e-9)
