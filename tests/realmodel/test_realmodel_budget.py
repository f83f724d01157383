"""A budget holds against a real server: parallel calls never spend past it.

A batch validates several items at once against llama-cpp-python's server (through the recording
proxy) with a budget that covers a few of them: calls are in flight together, each reserving its
worst case before it is sent, and an item starts only while the budget's room covers all its
calls. What the server itself reported using, priced as configured, must stay within the
budget; the run must count exactly that, and leave the rest resumable.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration._batch_cli import batch_file
from tests.realmodel._recorder import Recording
from tests.realmodel.test_realmodel_cli import (
    assert_usage_is_the_servers,
    cli,
    document,
    server_cost,
)

pytestmark = [pytest.mark.realmodel, pytest.mark.slow]

ITEMS = 8
#: About two items' worst case (prompt and 96 output tokens per verdict) and half of what the
#: eight items cost when nothing stops them: unreserved parallel calls would pass it.
BUDGET = 0.0008


def test_parallel_validators_never_spend_past_the_budget(
    openai_real: Recording, tmp_path: Path
) -> None:
    batch = batch_file(tmp_path, ITEMS)
    result = cli("validate", "--batch", str(batch), "--validators", "2", "--concurrency", "8",
                 "--budget", str(BUDGET), "--json")  # fmt: skip
    doc = document(result)

    spent = server_cost(openai_real)
    assert max(openai_real.concurrency) >= 2, openai_real.concurrency  # calls ran in parallel
    assert 0 < spent <= BUDGET, (spent, doc["usage"])
    assert_usage_is_the_servers(doc, openai_real)  # the run counts what the server reported
    # the budget stopped the batch before its end, and said so: the rest can be resumed
    assert doc["status"] == "budget_exceeded", {k: doc[k] for k in ("status", "error")}
    assert result.exit_code == 1, result.output
    assert doc["unfinished"], doc
    assert len(doc["results"]) + len(doc["unfinished"]) == ITEMS
