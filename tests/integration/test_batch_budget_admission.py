"""A tight budget is spent on finishing items: a batch starts an item only when the budget left
covers its worst case, whatever the concurrency, and says how to continue when it stops."""

from __future__ import annotations

import math
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from multiagent.graphs.batch_budget import item_worst_case, least_text
from multiagent.graphs.batch_store import batch_store_path, open_batch_store
from multiagent.nodes.context import build_context
from multiagent.policies import load_settings
from tests.integration._batch_cli import (
    batch_file,
    cli,
    document,
    numbered_items,
    use_fast_provider,
)

#: Covers a few items' worst case (each validator call reserves its whole output allowance,
#: several times what it costs), far from all twelve.
BUDGET = 0.003


@pytest.fixture(autouse=True)
def fast_provider(monkeypatch: pytest.MonkeyPatch) -> None:
    use_fast_provider(monkeypatch)


@pytest.mark.parametrize("concurrency", [1, 2, 8])
def test_a_tight_budget_finishes_whole_items_and_pays_for_no_half_validated_one(
    tmp_path: Path, concurrency: int
) -> None:
    batch = batch_file(tmp_path, 12)
    first = cli(
        "validate", "--batch", str(batch), "--validators", "2", "--concurrency", str(concurrency),
        "--thread", "tight", "--budget", str(BUDGET), "--json",
    )  # fmt: skip
    assert first.exit_code == 1, first.output
    stopped = document(first)
    assert stopped["status"] == "budget_exceeded"
    assert stopped["results"], "the budget covered whole items, yet none finished"
    # every call paid for went to an item that finished: no item was left part-validated
    assert stopped["this_run"]["calls"] == 2 * len(stopped["results"])
    assert stopped["this_run"]["cost_usd"] <= BUDGET
    assert "cannot finish the next item" in stopped["message"]
    assert (
        "stopped on its budget; resume with a larger budget: "
        "multiagent validate --thread tight --resume --budget USD"
    ) in first.stderr
    assert len(stopped["results"]) + stopped["unfinished_count"] == 12

    rest = document(cli("validate", "--thread", "tight", "--resume", "--budget", "10", "--json"))
    assert rest["status"] == "completed"
    assert [r["id"] for r in rest["results"]] == [f"i{n}" for n in range(12)]
    assert rest["this_run"]["calls"] == 2 * stopped["unfinished_count"]
    assert rest["usage"]["calls"] == 12 * 2


def test_a_budget_that_cannot_finish_one_item_starts_none_and_says_how_to_continue(
    tmp_path: Path,
) -> None:
    # one validator call fits (the budget is not refused up front), two do not
    batch = batch_file(tmp_path, 3)
    first = cli("validate", "--batch", str(batch), "--validators", "2", "--concurrency", "4",
                "--thread", "short", "--budget", "0.0008")  # fmt: skip
    assert first.exit_code == 1, first.output
    said = " ".join(first.stdout.split())  # the console wraps long lines
    assert "0 calls" in said  # nothing paid for an item it could not finish
    assert "cannot finish the next item" in said
    assert "3 items unfinished" in said
    assert "Resume with a larger budget: multiagent validate --thread short --resume" in said
    rest = document(cli("validate", "--thread", "short", "--resume", "--budget", "1", "--json"))
    assert rest["status"] == "completed"
    assert rest["usage"]["calls"] == 3 * 2  # nothing was paid for before


def _stored(path: Path) -> dict[str, list[tuple[object, ...]]]:
    """Every row of every table of the local batch store."""
    with closing(sqlite3.connect(path)) as conn:
        query = "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"
        tables = [name for (name,) in conn.execute(query)]
        return {t: sorted(conn.execute(f'SELECT * FROM "{t}"'), key=repr) for t in tables}


def test_a_resume_whose_budget_cannot_run_the_next_item_is_refused_with_the_least_that_can(
    tmp_path: Path,
) -> None:
    first = cli(
        "validate", "--batch", str(batch_file(tmp_path, 12)), "--validators", "2",
        "--concurrency", "1", "--thread", "tight", "--budget", str(BUDGET), "--json",
    )  # fmt: skip
    assert first.exit_code == 1, first.output
    stopped = document(first)
    following = stopped["unfinished"][0]
    text = next(i["text"] for i in numbered_items(12) if i["id"] == following)
    settings = load_settings()
    with open_batch_store(settings) as batches:  # what the batch spent, as a resume counts it
        spent = sum(entry["cost_usd"] for entry in batches.usage("tight"))
    worst = item_worst_case(build_context(settings), stopped["validators"])(text)
    store = batch_store_path(settings)
    before = _stored(store)
    # above what was spent, yet what it leaves cannot cover the next item's worst case
    given = round(spent + worst / 2, 6)
    refused = cli("validate", "--thread", "tight", "--resume", "--budget", str(given), "--json")
    assert refused.exit_code == 2, refused.output
    assert refused.stdout == ""
    line = refused.stderr.strip()
    assert len(line.splitlines()) == 1, refused.stderr
    assert "Traceback" not in refused.output
    least = math.ceil((spent + worst) * 1e9) / 1e9
    assert line == (
        f"error: --budget {given} USD cannot run another item of batch 'tight': ${spent:.6f} "
        f"spent + $0.000000 held leave ${given - spent:.6f}, and its next item {following!r} "
        f"may cost up to ${worst:.6f}; give at least --budget {least_text(least)}"
    )
    assert _stored(store) == before  # nothing stored changed
    # the least it names runs one more item
    rest = cli("validate", "--thread", "tight", "--resume", "--budget", least_text(least),
               "--json")  # fmt: skip
    assert rest.exit_code in (0, 1), rest.output
    assert following in [r["id"] for r in document(rest)["results"]]
    assert document(rest)["this_run"]["calls"] >= 2
