"""A local batch whose chunk stops mid-way on its budget keeps the verdicts it paid for, through
the ``openai`` provider against the simulator server on 127.0.0.1.

The chunk is stopped deterministically by the project's daily budget: the batch's own budget
admits only items it can finish, but the day's cap stops any call. One validator call at a time,
so the calls are made in a known order and the cap is chosen, from each call's cost and worst
case, to refuse one call in the middle of an item. The simulator's ``/sim/stats`` counts what
was served: the resume must be served exactly the calls not paid for yet, and decide every item
as an uninterrupted batch does.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from multiagent.cli import app
from multiagent.graphs.batch import BatchValidation, batch_cross_validate
from multiagent.nodes.context import build_context
from multiagent.nodes.validator import verdict_worst_case_usd
from multiagent.policies import load_settings
from tests.integration._fault_proxy import served_calls, served_through_proxy

runner = CliRunner()
ITEMS = [
    {"id": "bakery", "text": "The bakery opened in 1990 and sells bread and pastries."},
    {"id": "mill", "text": "The mill grinds rye on Tuesdays and wheat on Fridays."},
    {"id": "dairy", "text": "The dairy sells milk from its own cows every morning."},
    {"id": "mill-again", "text": "The mill grinds rye on Tuesdays and wheat on Fridays."},
]
TEXTS = [ITEMS[0]["text"], ITEMS[1]["text"], ITEMS[2]["text"]]  # in the order they are asked


@pytest.fixture
def sim(isolated_env: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The simulator server, the ``openai`` provider pointed at it, one attempt per call (see
    :func:`~tests.integration._fault_proxy.served_through_proxy`)."""
    with served_through_proxy(monkeypatch, attempts=1, proxied=False) as (url, _proxy):
        yield url


def write_items(directory: Path) -> Path:
    """:data:`ITEMS` as a batch file in ``directory``."""
    path = directory / "items.jsonl"
    path.write_text("".join(json.dumps(item) + "\n" for item in ITEMS), encoding="utf-8")
    return path


@pytest.fixture
def items_file(tmp_path: Path) -> Path:
    return write_items(tmp_path)


def _cli(*args: str) -> dict[str, Any]:
    result = runner.invoke(app, [*args, "--json"])
    assert result.stdout.lstrip().startswith("{"), result.output
    return dict(json.loads(result.stdout))


def whole_batch(sim: str) -> BatchValidation:
    """:data:`ITEMS` validated in one uninterrupted batch, one call at a time: the verdicts to
    reach and each call's cost, in call order; the simulator at ``sim`` served each call."""
    reference = batch_cross_validate(ITEMS, max_concurrency=1, thread_id="whole")  # type: ignore[arg-type]
    validators = reference.outcome.values["validators"]
    assert len(reference.outcome.ledger.records()) == served_calls(sim) == 3 * len(validators)
    return reference


def distinct(verdicts: list[dict[str, Any]]) -> list[str]:
    """Each verdict once, in a stable order (a batch lists a text's verdicts under each of its
    items)."""
    return sorted({json.dumps(verdict, sort_keys=True) for verdict in verdicts})


def mid_item_cap(reference: BatchValidation) -> tuple[int, float]:
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


def _cap_refusing(costs: list[float], worst: list[float], calls: range) -> tuple[int, float]:
    """A daily cap under which the calls before one of ``calls`` are made and that one is
    refused (a call is made while what was spent and its worst case fit the cap), and its
    index."""
    for refused in calls:
        spent = [sum(costs[:k]) for k in range(len(costs))]
        allowed = max(spent[k] + worst[k] for k in range(refused))
        stop = spent[refused] + worst[refused]
        if allowed < stop:
            return refused, (allowed + stop) / 2
    raise AssertionError("no call of the item can be refused alone")


def test_a_chunk_stopped_by_its_budget_keeps_what_it_paid_and_resume_buys_only_the_rest(
    sim: str, items_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # an uninterrupted batch: the verdicts to reach, and what each call cost, in call order
    reference = whole_batch(sim)
    calls = reference.outcome.ledger.records()
    refused, cap = mid_item_cap(reference)

    monkeypatch.setenv("MULTIAGENT_BUDGET__DAILY_USD", repr(cap))
    before = served_calls(sim)
    stopped = _cli(
        "validate", "--batch", str(items_file), "--thread", "b-stop", "--concurrency", "1"
    )
    assert stopped["status"] == "budget_exceeded", stopped["message"]
    assert served_calls(sim) - before == refused  # the calls made, each paid once
    # the bakery finished; the mill (and its twin) was part-validated; the dairy never started
    assert [r["id"] for r in stopped["results"]] == ["bakery"]
    assert stopped["unfinished"] == ["mill", "dairy", "mill-again"]
    paid = sum(call.cost_usd for call in calls[:refused])
    assert stopped["usage"]["cost_usd"] == pytest.approx(paid, rel=1e-6)

    monkeypatch.delenv("MULTIAGENT_BUDGET__DAILY_USD")
    before = served_calls(sim)
    back = _cli("validate", "--thread", "b-stop", "--resume", "--concurrency", "1")
    assert back["status"] == "completed", back["message"]
    # exactly the calls not paid for yet: the mill's validators that were not asked, the dairy's
    assert served_calls(sim) - before == len(calls) - refused
    assert back["this_run"]["calls"] == len(calls) - refused
    # every item decided as the uninterrupted batch decided it, on the same verdicts
    assert back["results"] == [dict(result) for result in reference.results]

    def key(verdict: dict[str, Any]) -> tuple[str, str]:
        return verdict["key"], verdict["validator"]

    assert sorted(back["verdicts"], key=key) == sorted(reference.verdicts, key=key)  # type: ignore[arg-type]
    assert back["unfinished"] == back["incomplete"] == []
    assert back["usage"]["cost_usd"] == pytest.approx(
        sum(call.cost_usd for call in calls), rel=1e-6
    )


def test_a_resume_stopped_again_keeps_the_verdicts_of_both_runs(
    sim: str, items_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reference = batch_cross_validate(ITEMS, max_concurrency=1, thread_id="whole")  # type: ignore[arg-type]
    calls = reference.outcome.ledger.records()
    validators = reference.outcome.values["validators"]
    context = build_context(load_settings())
    costs = [call.cost_usd for call in calls]
    worst = [
        verdict_worst_case_usd(context, context.agents[name], text)
        for text in TEXTS
        for name in validators
    ]
    per_text = len(validators)
    first, cap = _cap_refusing(costs, worst, range(per_text + 1, 2 * per_text))
    monkeypatch.setenv("MULTIAGENT_BUDGET__DAILY_USD", repr(cap))
    served = served_calls(sim)
    _cli("validate", "--batch", str(items_file), "--thread", "b-twice", "--concurrency", "1")
    assert served_calls(sim) - served == first

    # the resume asks the mill's validators not asked yet, then the dairy's, in the reference's
    # order, under a day's cap (spend so far included) that stops it again one call further on
    second, cap = _cap_refusing(costs, worst, range(first + 1, len(calls)))
    monkeypatch.setenv("MULTIAGENT_BUDGET__DAILY_USD", repr(cap))
    again = _cli("validate", "--thread", "b-twice", "--resume", "--concurrency", "1")
    assert again["status"] == "budget_exceeded", again["message"]
    assert served_calls(sim) - served == second

    monkeypatch.delenv("MULTIAGENT_BUDGET__DAILY_USD")
    back = _cli("validate", "--thread", "b-twice", "--resume", "--concurrency", "1")
    assert back["status"] == "completed", back["message"]
    assert served_calls(sim) - served == len(calls)  # every verdict bought once over the three runs
    assert back["results"] == [dict(result) for result in reference.results]
    assert back["usage"]["cost_usd"] == pytest.approx(sum(costs), rel=1e-6)
