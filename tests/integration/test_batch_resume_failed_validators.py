"""A local batch whose items one validator failed after retries, through the ``openai`` provider
against the simulator server on 127.0.0.1, and what ``--resume`` then runs.

As a single run's (``tests/integration/test_workflows_faults_http.py``): the others decide the
item, the batch names it incomplete, and a resume asks only the failed validator again, keeping
the verdicts given. A proxy in front of the simulator (:mod:`tests.integration._fault_proxy`)
fails the chosen validator on the chosen text; the simulator's ``/sim/stats`` counts what was
served, so "no paid call repeated" is what the server saw.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from multiagent.cli import app
from multiagent.commands._exit_codes import exit_code
from multiagent.graphs.batch_budget import item_worst_case
from multiagent.nodes.context import build_context
from multiagent.policies import load_settings
from tests.integration._fault_proxy import (
    ITEMS,
    FaultProxy,
    served_calls,
    served_through_proxy,
)

runner = CliRunner()


@pytest.fixture
def served(isolated_env: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, FaultProxy]]:
    """:func:`~tests.integration._fault_proxy.served_through_proxy`, two attempts per call."""
    with served_through_proxy(monkeypatch) as served:
        yield served


@pytest.fixture
def items_file(tmp_path: Path, isolated_env: Path) -> Path:
    path = tmp_path / "items.jsonl"
    path.write_text("".join(json.dumps(item) + "\n" for item in ITEMS), encoding="utf-8")
    return path


def _cli(*args: str) -> tuple[int, dict[str, Any]]:
    result = runner.invoke(app, [*args, "--json"])
    assert result.stdout.lstrip().startswith("{"), result.output
    return result.exit_code, json.loads(result.stdout)


def _by_id(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {result["id"]: result for result in document["results"]}


def _verdicts_except(document: dict[str, Any], validator: str) -> list[dict[str, Any]]:
    return [v for v in document["verdicts"] if v["validator"] != validator]


def test_batch_resume_asks_only_the_failed_validator_and_keeps_the_verdicts(
    served: tuple[str, FaultProxy], items_file: Path
) -> None:
    sim, proxy = served
    proxy.fail("completeness", text="grinds rye")  # one validator, on one text (two items)
    code, first = _cli("validate", "--batch", str(items_file), "--thread", "b-part")
    assert first["status"] == "completed"
    # three distinct texts, three validators; completeness refused twice (two attempts) on one
    assert served_calls(sim) == 3 * 3 - 1
    assert proxy.refused == {"completeness": 2}
    results = _by_id(first)
    assert (results["mill"]["responded"], results["mill"]["failed"]) == (2, ["completeness"])
    assert results["mill-again"]["failed"] == ["completeness"]
    assert [results[i]["failed"] for i in ("bakery", "dairy")] == [[], []]
    # decided on the others, and named, with what completes them
    assert (first["incomplete"], first["incomplete_count"]) == (["mill", "mill-again"], 2)
    assert (first["unfinished"], first["unfinished_count"]) == ([], 0)
    assert "2 items incomplete" in first["message"]
    assert "--resume asks only those validators again" in first["message"]
    kept = _verdicts_except(first, "completeness")  # every verdict given, completeness's aside
    assert len(first["verdicts"]) == 8
    assert code == exit_code("completed", first["results"])

    proxy.heal()
    code, back = _cli("validate", "--thread", "b-part", "--resume")
    assert back["status"] == "completed"
    # completeness on the mill's text, once for both items; nothing else paid again
    assert served_calls(sim) == 8 + 1
    assert proxy.forwarded["completeness"] == 2 + 1
    assert proxy.forwarded == {"factual_accuracy": 3, "logical_consistency": 3, "completeness": 3}
    assert back["this_run"]["calls"] == 1
    results = _by_id(back)
    for item in ("mill", "mill-again"):
        assert (results[item]["responded"], results[item]["failed"]) == (3, [])
    for item in ("bakery", "dairy"):  # fully decided: untouched
        assert results[item] == _by_id(first)[item]
    assert all(verdict in back["verdicts"] for verdict in kept)
    assert len(back["verdicts"]) == 9
    assert (back["failures"], back["incomplete"], back["message"]) == ([], [], "")
    assert code == exit_code("completed", back["results"])

    # nothing left to complete: a resume runs nothing
    code, again = _cli("validate", "--thread", "b-part", "--resume")
    assert served_calls(sim) == 9
    assert again["this_run"]["calls"] == 0
    assert again["results"] == back["results"]


def test_a_validator_failing_again_on_resume_leaves_the_item_incomplete(
    served: tuple[str, FaultProxy], items_file: Path
) -> None:
    sim, proxy = served
    proxy.fail("completeness", text="grinds rye")
    _cli("validate", "--batch", str(items_file), "--thread", "b-again")
    assert served_calls(sim) == 8
    code, back = _cli("validate", "--thread", "b-again", "--resume")
    assert code == exit_code("completed", back["results"])
    # asked again (two attempts refused), nothing else asked: still decided on the others
    assert proxy.refused == {"completeness": 4}
    assert served_calls(sim) == 8
    assert back["incomplete"] == ["mill", "mill-again"]
    results = _by_id(back)
    assert (results["mill"]["responded"], results["mill"]["failed"]) == (2, ["completeness"])
    assert [f["validator"] for f in back["failures"]] == ["completeness"]
    assert len(back["verdicts"]) == 8


def test_the_terminal_names_the_incomplete_items_and_the_resume_command(
    served: tuple[str, FaultProxy], items_file: Path
) -> None:
    _, proxy = served
    proxy.fail("completeness", text="grinds rye")
    result = runner.invoke(app, ["validate", "--batch", str(items_file), "--thread", "b-hint"])
    lines = " ".join(result.stdout.split())
    assert (
        "2 items incomplete (validators gave no verdict): mill, mill-again; --resume asks only "
        "those validators again: multiagent validate --thread b-hint --resume"
    ) in lines


def test_a_budgeted_resume_needs_room_for_the_failed_validators_only(
    served: tuple[str, FaultProxy], items_file: Path
) -> None:
    sim, proxy = served
    proxy.fail("completeness", text="grinds rye")
    _code, first = _cli(
        "validate", "--batch", str(items_file), "--thread", "b-budget", "--budget", "1"
    )
    assert first["incomplete"] == ["mill", "mill-again"]
    spent = first["usage"]["cost_usd"]
    context = build_context(load_settings())
    text = ITEMS[1]["text"]
    one = item_worst_case(context, ["completeness"])(text)
    every = item_worst_case(context, first["validators"])(text)
    assert one < every / 2
    proxy.heal()

    # what cannot cover the one call is refused, naming the item and the least that runs it
    short = runner.invoke(
        app, ["validate", "--thread", "b-budget", "--resume", "--budget", str(spent + one / 2)]
    )
    assert short.exit_code == 2, short.output
    assert "its next item 'mill'" in short.stderr
    assert served_calls(sim) == 8

    # room for the failed validator's call, far from a whole item's: it is asked, and only it
    code, back = _cli(
        "validate", "--thread", "b-budget", "--resume", "--budget", str(spent + one * 1.5)
    )
    assert back["status"] == "completed", back["message"]
    assert served_calls(sim) == 8 + 1
    assert back["incomplete"] == []
    assert code == exit_code("completed", back["results"])
