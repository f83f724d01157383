"""A local batch stopped by Ctrl-C keeps what it paid for and resumes; its budget and usage span
its sessions; its item text follows the rule of CLI text; its id is never a thread's."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from multiagent import _interrupt
from multiagent.audit import AuditTrail, audit_dir
from multiagent.graphs import batch as batch_module
from multiagent.graphs import batch_pool
from multiagent.graphs.batch import batch_cross_validate
from multiagent.graphs.batch_store import batch_store_path, open_batch_store
from multiagent.nodes.context import build_context
from multiagent.nodes.usage import total_usage
from multiagent.policies import Settings, load_settings
from tests.integration._batch_cli import (
    batch_file,
    cli,
    document,
    numbered_items,
    use_fast_provider,
)


@pytest.fixture(autouse=True)
def fast_provider(monkeypatch: pytest.MonkeyPatch) -> None:
    use_fast_provider(monkeypatch)


def _ctrl_c_once() -> Callable[..., None]:
    """A progress callback that is Ctrl-C the first time (after the first chunk is stored)."""
    fired: list[int] = []

    def on_progress(done: int, total: int) -> None:
        if not fired:
            fired.append(done)
            raise KeyboardInterrupt

    return on_progress


def test_ctrl_c_stores_the_finished_chunk_prints_the_resume_command_and_resume_runs_the_rest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = batch_module.batch_cross_validate
    on_progress = _ctrl_c_once()

    def interrupted(*args: Any, **kwargs: Any) -> Any:
        # chunks of 4 items; 2 validators at concurrency 2: one chunk at a time
        return real(*args, **{**kwargs, "chunk_size": 4, "on_progress": on_progress})

    monkeypatch.setattr(batch_module, "batch_cross_validate", interrupted)
    batch = batch_file(tmp_path, 12)
    result = cli("validate", "--batch", str(batch), "--validators", "2", "--concurrency", "2",
                 "--json")  # fmt: skip
    assert result.exit_code == 130, result.output
    (record,) = AuditTrail(audit_dir(load_settings())).records()
    assert (record["exit_code"], record["error"]) == (130, "KeyboardInterrupt")
    doc = document(result)  # one JSON document on stdout
    batch_id = doc["thread_id"]
    assert doc["status"] == "interrupted"
    assert [r["id"] for r in doc["results"]] == ["i0", "i1", "i2", "i3"]
    assert doc["unfinished"] == [f"i{n}" for n in range(4, 12)]
    assert "stopped by Ctrl-C; 8 items unfinished" in doc["message"]
    assert doc["this_run"]["calls"] == 4 * 2  # no chunk started after the interrupt
    assert doc["usage"]["calls"] == doc["this_run"]["calls"]
    assert f"interrupted; resume: multiagent validate --thread {batch_id} --resume" in (
        result.stderr
    )

    monkeypatch.setattr(batch_module, "batch_cross_validate", real)
    resumed = cli("validate", "--thread", batch_id, "--resume", "--json")
    rest = document(resumed)
    assert rest["status"] == "completed", resumed.output
    assert [r["id"] for r in rest["results"]] == [f"i{n}" for n in range(12)]
    assert rest["this_run"]["calls"] == 8 * 2  # exactly the unfinished items
    assert rest["usage"]["calls"] == 12 * 2


def test_a_batch_stopped_by_sigterm_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def sigterm_once(done: int, total: int) -> None:  # as the CLI's handler does for SIGTERM
        if not _interrupt.terminated():
            monkeypatch.setattr(_interrupt, "_terminated", True)
            raise KeyboardInterrupt

    real = batch_module.batch_cross_validate
    monkeypatch.setattr(
        batch_module, "batch_cross_validate",
        lambda *a, **k: real(*a, **{**k, "chunk_size": 4, "on_progress": sigterm_once}),
    )  # fmt: skip
    result = cli("validate", "--batch", str(batch_file(tmp_path, 8)), "--validators", "2",
                 "--concurrency", "2", "--json")  # fmt: skip
    assert result.exit_code == 130, result.output  # the console script makes it 143
    doc = document(result)
    assert doc["status"] == "interrupted"
    assert doc["message"].startswith("stopped by SIGTERM; 4 items unfinished")


@pytest.mark.parametrize("concurrency", [2, 4])  # one chunk at a time; two
def test_a_stop_asked_by_ctrl_c_ends_the_chunks_at_their_next_call_and_keeps_what_finished(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, concurrency: int
) -> None:
    fired: list[int] = []

    def ctrl_c_once(done: int, total: int) -> None:  # as the CLI's handler does: a flag
        if not fired:
            fired.append(done)
            monkeypatch.setattr(_interrupt, "_requested", True)

    settings = load_settings(home=tmp_path / "home")
    with open_batch_store(settings) as store:
        first = batch_cross_validate(
            numbered_items(16), settings=settings, validators=2, max_concurrency=concurrency,
            chunk_size=4, context=build_context(settings), store=store, thread_id="bs",
            on_progress=ctrl_c_once,
        )  # fmt: skip
        assert first.status == "interrupted"
        # what finished before the stop (a chunk running beside the first may finish too)
        assert len(first.results) >= fired[0] == 4
        assert len(first.results) + len(first.unfinished) == 16
        assert len(first.unfinished) >= 8  # no chunk started after the stop
        paid = first.outcome.ledger.totals()
        assert first.usage["calls"] == paid["calls"]  # every call paid for is stored
        monkeypatch.setattr(_interrupt, "_requested", False)
        second = batch_cross_validate(
            None, settings=settings, context=build_context(settings), store=store,
            thread_id="bs", resume=True, max_concurrency=concurrency,
        )  # fmt: skip
        assert second.status == "completed"
        # only the rest ran (and calls a stopped chunk made are not made twice: cached)
        assert second.outcome.ledger.totals()["calls"] <= len(first.unfinished) * 2
        assert [r["id"] for r in second.results] == [f"i{n}" for n in range(16)]


def _chunks_stored(settings: Settings) -> int:
    with closing(sqlite3.connect(batch_store_path(settings))) as db:
        return int(db.execute("SELECT count(*) FROM chunk_usage").fetchone()[0])


def test_ctrl_c_while_chunks_run_starts_nothing_new_and_keeps_every_call_paid_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_wait = batch_pool.wait
    calls: list[int] = []

    def wait_then_ctrl_c(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:  # the signal lands while the first chunks run
            raise KeyboardInterrupt
        return real_wait(*args, **kwargs)

    monkeypatch.setattr(batch_pool, "wait", wait_then_ctrl_c)
    settings = load_settings(home=tmp_path / "home")
    with open_batch_store(settings) as store:
        try:  # 2 validators at concurrency 4: two chunks of 4 items at a time, four in all
            first = batch_cross_validate(
                numbered_items(16), settings=settings, validators=2, max_concurrency=4,
                chunk_size=4, context=build_context(settings), store=store, thread_id="bi",
            )  # fmt: skip
        except KeyboardInterrupt:  # not to pytest, which would end the whole session
            pytest.fail("Ctrl-C went through the batch instead of stopping it")
        assert first.status == "interrupted"
        assert first.outcome.error == "KeyboardInterrupt"
        assert len(first.results) + len(first.unfinished) == 16
        assert len(first.unfinished) >= 8  # the two chunks never started are unfinished
        paid = first.outcome.ledger.totals()
        assert first.usage["calls"] == paid["calls"]  # every call paid for is stored
        assert first.usage["cost_usd"] == pytest.approx(paid["cost_usd"])
        assert _chunks_stored(settings) == 2  # the two running at Ctrl-C; no other started
        monkeypatch.setattr(batch_pool, "wait", real_wait)
        second = batch_cross_validate(
            None, settings=settings, context=build_context(settings), store=store,
            thread_id="bi", resume=True, max_concurrency=4,
        )  # fmt: skip
        assert second.status == "completed"
        assert [r["id"] for r in second.results] == [f"i{n}" for n in range(16)]
        # the calls the stop kept from being sent are cancelled records, errors of their node
        entries = store.usage("bi")
        assert total_usage(entries)["calls"] - sum(e.get("errors", 0) for e in entries) == 32
    # the verdicts of a stopped chunk's finished calls are reused: each item was paid for once
    resumed = second.outcome.ledger.totals()
    assert paid["calls"] - paid["cancelled"] + resumed["calls"] == 16 * 2
    assert resumed["cancelled"] == 0


def test_a_resumed_batch_spends_what_is_left_of_its_budget_and_reports_all_its_sessions(
    tmp_path: Path,
) -> None:
    batch = batch_file(tmp_path, 40)
    first = cli("validate", "--batch", str(batch), "--validators", "2", "--concurrency", "2",
                "--thread", "bb", "--budget", "0.003", "--json")  # fmt: skip
    assert first.exit_code == 1, first.output
    stopped = document(first)
    assert stopped["status"] == "budget_exceeded"
    spent = stopped["this_run"]["cost_usd"]
    assert spent > 0
    assert stopped["usage"]["calls"] == stopped["this_run"]["calls"]

    second = document(cli("validate", "--thread", "bb", "--resume", "--budget", "0.006", "--json"))
    assert second["this_run"]["budget_usd"] == pytest.approx(0.006 - spent)
    for key in ("calls", "input_tokens", "output_tokens"):
        assert second["usage"][key] == stopped["this_run"][key] + second["this_run"][key]
    assert second["usage"]["cost_usd"] == pytest.approx(spent + second["this_run"]["cost_usd"])
    assert second["usage"]["cost_usd"] <= 0.006  # the whole batch kept to the budget given


def test_a_control_character_in_an_item_text_is_one_line_and_nothing_is_stored(
    tmp_path: Path,
) -> None:
    batch = tmp_path / "items.jsonl"
    batch.write_text(
        '{"id": "ok", "text": "Ovens are hot.\\tTabs are text."}\n'
        '{"id": "a", "text": "x \\u001b one"}\n',
        encoding="utf-8",
    )
    result = cli("validate", "--batch", str(batch), "--thread", "bc")
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1
    assert "line 2: 'text' holds the control character U+001B" in result.stderr
    assert not batch_store_path(load_settings()).exists()


def test_a_batch_and_a_thread_never_share_an_id(tmp_path: Path) -> None:
    batch = tmp_path / "items.jsonl"
    batch.write_text('{"id": "a", "text": "Ovens are hot."}\n', encoding="utf-8")
    assert cli("validate", "Ovens are hot.", "--thread", "same", "--json").exit_code in (0, 3)
    taken = cli("validate", "--batch", str(batch), "--thread", "same")
    assert taken.exit_code == 2
    assert "id 'same' is already a validation thread" in taken.stderr
    with open_batch_store(load_settings()) as store:
        assert store.manifest("same") is None  # nothing stored

    assert cli("validate", "--batch", str(batch), "--thread", "bt", "--json").exit_code in (0, 3)
    for command in (["validate", "Ovens are cold."], ["run", "Plan a bake sale"]):
        refused = cli(*command, "--thread", "bt")
        assert refused.exit_code == 2
        assert "id 'bt' is already a batch's" in refused.stderr
    threads = json.loads(cli("threads", "list", "--json").stdout)["threads"]
    assert [t["thread_id"] for t in threads] == ["same"]
    resumed = document(cli("validate", "--thread", "bt", "--resume", "--json"))
    assert [r["id"] for r in resumed["results"]] == ["a"]
