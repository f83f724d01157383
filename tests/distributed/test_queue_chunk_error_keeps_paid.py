"""A queued batch whose worker chunk ends by an error nobody expected (a bug in a node, not a
provider failure) keeps what it paid for, and the entry's own retry (no ``batch resume``) buys
only the rest, through the ``openai`` provider against the simulator server on 127.0.0.1.

One validator's node raises ``TypeError`` on the mill's text, the first time only, before its
call is sent (:func:`~tests.integration.test_batch_error_keeps_paid_verdicts.raise_once`). The
first worker's attempt fails as any unexpected error does (said in one line, counted, the entry
left pending), but the items it finished are stored and the mill's verdicts given are kept as a
partial record. A second worker reclaims the entry after its idle time: the simulator's
``/sim/stats`` shows it is served exactly the calls not made yet, and the results are those of
an uninterrupted batch.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from multiagent.distributed.deadletter import attempts_key, dead_key
from multiagent.distributed.queue import batch_key, stream_key
from tests.distributed._workers import cli_json, work_until_idle
from tests.integration._fault_proxy import served_calls
from tests.integration.test_batch_error_keeps_paid_verdicts import raise_once
from tests.integration.test_batch_stop_keeps_paid_verdicts import (
    distinct,
    whole_batch,
    write_items,
)

pytestmark = pytest.mark.redis


@pytest.mark.parametrize("budget", [None, "1"], ids=["profile-budget", "batch-budget"])
def test_a_queued_chunk_ended_by_an_unexpected_error_keeps_its_verdicts_for_the_entrys_retry(
    sim: str,
    tmp_path: Path,
    redis_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    budget: str | None,
) -> None:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    reference = whole_batch(sim)
    calls = reference.outcome.ledger.records()
    validators = reference.outcome.values["validators"]
    raised = raise_once(monkeypatch, name=validators[1])
    path = write_items(tmp_path)
    given = [] if budget is None else ["--budget", budget]
    cli_json("validate", "--batch", str(path), "--queue", "qe", "--thread", "qb", *given)
    entry_id = str(client.xrange(stream_key("qe"))[0][0])

    before = served_calls(sim)
    # the failed entry's retry is the next worker's
    stats = work_until_idle(client, "qe", claim_idle_s=60.0)
    first = served_calls(sim) - before
    assert raised
    assert 0 < first < len(calls)
    # the error is said and counted as before: a failed attempt, the entry left pending
    assert f"worker: entry {entry_id} (batch qb chunk " in capsys.readouterr().err
    assert (stats["failures"], stats["dead_letters"]) == (1, 0)
    assert client.hget(attempts_key("qe"), entry_id) == "1"
    # what the attempt paid for is kept: the items it finished, the mill's verdicts given
    stopped = cli_json("batch", "results", "qb")
    assert [r["id"] for r in stopped["results"]] == ["bakery", "dairy"]
    assert stopped["unfinished"] == stopped["partial"] == ["mill", "mill-again"]
    paid = sum(call.cost_usd for call in calls) - calls[len(validators) + 1].cost_usd
    assert stopped["usage"]["calls"] == first
    assert stopped["usage"]["cost_usd"] == pytest.approx(paid, rel=1e-6)

    before = served_calls(sim)
    # reclaims the entry: its retry, no resume
    stats = work_until_idle(client, "qe", claim_idle_s=0.2)
    assert stats["reclaimed"] == 1
    # exactly the calls not made yet: the mill's validator that raised
    assert served_calls(sim) - before == len(calls) - first
    back = cli_json("batch", "results", "qb")
    assert back["state"] == "completed"
    assert back["unfinished"] == back["partial"] == back["incomplete"] == []
    assert back["results"] == [dict(result) for result in reference.results]
    assert distinct(back["verdicts"]) == distinct(reference.verdicts)  # type: ignore[arg-type]
    assert back["usage"]["calls"] == len(calls)
    assert back["usage"]["cost_usd"] == pytest.approx(sum(c.cost_usd for c in calls), rel=1e-6)
    assert client.xlen(dead_key("qe")) == 0
    assert client.exists(batch_key("qb", "partial")) == 0
