"""A local batch whose chunk ends by an error nobody expected (a bug in a node, not a provider
failure) keeps what it paid for before the error is reported, through the ``openai`` provider
against the simulator server on 127.0.0.1.

The fault is one validator's node raising ``TypeError`` on one text, the first time only, before
its call is sent (:func:`raise_once`). The other validator calls of the step were served and
paid: the finished items are stored, the item left with verdicts is stored as a partial record,
and ``--resume`` asks exactly the validators not asked yet. The simulator's ``/sim/stats``
counts what was served: over both runs, every call of an uninterrupted batch exactly once, and
the same results.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from multiagent.cli import app
from multiagent.nodes import validator
from tests.integration._fault_proxy import served_calls, served_through_proxy
from tests.integration.test_batch_stop_keeps_paid_verdicts import (
    ITEMS,
    distinct,
    whole_batch,
    write_items,
)

runner = CliRunner()
#: The text whose validator raises: the mill's (two items), asked after the bakery's.
FAULTY_TEXT = ITEMS[1]["text"]


def raise_once(monkeypatch: pytest.MonkeyPatch, *, name: str) -> list[str]:
    """Make validator ``name``'s node raise ``TypeError`` on :data:`FAULTY_TEXT` the first time
    it is asked, before its call is sent; returns the list the raise is noted in."""
    real = validator.cached_verdict
    raised: list[str] = []

    def faulty(context: Any, agent: Any, text: str, compute: Any) -> Any:
        if not raised and agent.name == name and text == FAULTY_TEXT:
            raised.append(name)
            raise TypeError("a bug in the validator node")
        return real(context, agent, text, compute)

    monkeypatch.setattr(validator, "cached_verdict", faulty)
    return raised


@pytest.fixture
def sim(isolated_env: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The simulator server, the ``openai`` provider pointed at it, one attempt per call."""
    with served_through_proxy(monkeypatch, attempts=1, proxied=False) as (url, _proxy):
        yield url


# at 3, the validators of a step run at once: those still answering when the error ends the
# step finish after it, and their verdicts are kept too
@pytest.mark.parametrize("concurrency", ["1", "3"])
def test_a_chunk_ended_by_an_unexpected_error_keeps_what_it_paid_and_resume_buys_the_rest(
    sim: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, concurrency: str
) -> None:
    reference = whole_batch(sim)
    calls = reference.outcome.ledger.records()
    validators = reference.outcome.values["validators"]
    raised = raise_once(monkeypatch, name=validators[1])
    path = write_items(tmp_path)

    before = served_calls(sim)
    failed = runner.invoke(
        app, ["validate", "--batch", str(path), "--thread", "b-err", "--concurrency", concurrency]
    )
    assert raised  # the error is reported as before: the command ends with it
    assert isinstance(failed.exception, TypeError), failed.output
    first = served_calls(sim) - before
    assert 0 < first < len(calls)

    before = served_calls(sim)
    result = runner.invoke(
        app, ["validate", "--thread", "b-err", "--resume", "--concurrency", concurrency, "--json"]
    )
    back = json.loads(result.stdout)
    assert back["status"] == "completed", back["message"]
    # exactly the calls not paid for yet: over both runs, each call of the reference once
    assert served_calls(sim) - before == len(calls) - first
    assert back["this_run"]["calls"] == len(calls) - first
    assert back["results"] == [dict(r) for r in reference.results]
    assert distinct(back["verdicts"]) == distinct(reference.verdicts)  # type: ignore[arg-type]
    assert back["unfinished"] == back["incomplete"] == []
    assert back["usage"]["cost_usd"] == pytest.approx(
        sum(call.cost_usd for call in calls), rel=1e-6
    )
