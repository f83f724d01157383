"""A batch is many bounded graph runs, stored per chunk; an outage stops it resumable."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from langchain_core.callbacks import BaseCallbackHandler

from multiagent.commands._exit_codes import exit_code
from multiagent.errors import UsageError
from multiagent.graphs.batch import batch_cross_validate
from multiagent.graphs.batch_chunks import plan_chunks, run_chunk
from multiagent.nodes.context import build_context
from multiagent.nodes.state import ValidationItem
from multiagent.nodes.validator import aggregate
from multiagent.observability.live import live_writer
from multiagent.policies import load_settings
from tests.integration._batch_cli import (
    batch_file,
    cli,
    document,
    numbered_items,
    use_fast_provider,
)

#: Holds the lock file given as its argument until it is killed; says "held" once it does.
HOLD_LOCK = (
    "import fcntl, os, sys, time\n"
    "os.makedirs(os.path.dirname(sys.argv[1]), exist_ok=True)\n"
    "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)\n"
    "fcntl.flock(fd, fcntl.LOCK_EX)\n"
    "print('held', flush=True)\n"
    "time.sleep(60)\n"
)


@pytest.fixture(autouse=True)
def fast_provider(monkeypatch: pytest.MonkeyPatch) -> None:
    use_fast_provider(monkeypatch)


def test_plan_chunks_bounds_distinct_texts_and_keeps_identical_items_together() -> None:
    items = numbered_items(5)
    items.insert(4, ValidationItem(id="dup", text=items[0]["text"]))
    chunks = plan_chunks(items, chunk_size=2)
    assert [[i["id"] for i in chunk] for chunk in chunks] == [
        ["i0", "dup", "i1"], ["i2", "i3"], ["i4"],
    ]  # fmt: skip


def test_aggregate_gives_each_item_its_own_verdicts() -> None:
    items = numbered_items(3)
    state: Any = {"items": items, "validators": ["a", "b"], "threshold": 0.5, "usage": []}
    from multiagent.nodes.validator import text_key

    keys = [text_key(i["text"]) for i in items]
    state["verdicts"] = [
        {"key": keys[n], "validator": v, "passed": n != 1, "confidence": 0.5, "issues": ["x"],
         "rationale": "", "cached": False}
        for n in range(3) for v in ("a", "b")
    ]  # fmt: skip
    state["failures"] = [{"key": keys[2], "validator": "c", "error": "boom"}]
    results = aggregate(state)["results"]
    assert isinstance(results, list)
    assert [(r["status"], r["responded"], r["failed"]) for r in results] == [
        ("passed", 2, []), ("failed", 2, []), ("passed", 2, ["c"]),
    ]  # fmt: skip


def test_a_batch_runs_as_one_graph_run_per_chunk() -> None:
    settings = load_settings()
    progress: list[tuple[int, int]] = []
    result = batch_cross_validate(
        numbered_items(7), settings=settings, validators=2, max_concurrency=2, chunk_size=3,
        context=build_context(settings, analysis_cache=None),
        on_progress=lambda done, total: progress.append((done, total)),
    )  # fmt: skip
    assert result.status == "completed"
    assert progress == [(3, 7), (6, 7), (7, 7)]  # three chunks, each stored once it ended
    assert [r["id"] for r in result.results] == [f"i{n}" for n in range(7)]
    assert result.usage["calls"] == 14


def test_an_outage_stops_the_batch_resumable_and_resume_runs_exactly_the_rest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    batch = tmp_path / "items.jsonl"
    batch.write_text("".join(json.dumps(i) + "\n" for i in numbered_items(6)), encoding="utf-8")
    monkeypatch.setenv("MULTIAGENT_SIM__SERVER_ERROR_RATE", "1.0")
    down = cli("validate", "--batch", str(batch), "--validators", "2", "--concurrency", "2",
               "--thread", "b1", "--json")  # fmt: skip
    assert down.exit_code == 1, down.output
    doc = document(down)
    assert doc["status"] == "failed"
    assert doc["results"] == []
    assert doc["unfinished"] == [f"i{n}" for n in range(6)]
    assert doc["unfinished_count"] == 6
    assert "6 items unfinished: i0, i1, i2, i3, i4, i5" in doc["message"]
    # the first chunk failed, so no other chunk was started: one chunk's calls, no more
    assert doc["this_run"]["calls"] <= 2 * 6
    monkeypatch.setenv("MULTIAGENT_SIM__SERVER_ERROR_RATE", "0")
    up = cli("validate", "--thread", "b1", "--resume", "--json")
    doc = document(up)
    # finished: the exit code says how consensus went (some simulated verdicts fail)
    assert up.exit_code == exit_code("completed", doc["results"]), up.output
    assert doc["status"] == "completed"
    assert doc["unfinished"] == []
    assert [r["id"] for r in doc["results"]] == [f"i{n}" for n in range(6)]
    assert doc["this_run"]["calls"] == 6 * 2
    again = document(cli("validate", "--thread", "b1", "--resume", "--json"))
    assert again["status"] == "completed"
    assert again["this_run"]["calls"] == 0  # finished chunks are never run again


def test_a_budget_stop_keeps_finished_chunks_and_resume_finishes_the_rest(tmp_path: Path) -> None:
    batch = tmp_path / "items.jsonl"
    batch.write_text("".join(json.dumps(i) + "\n" for i in numbered_items(40)), encoding="utf-8")
    first = cli("validate", "--batch", str(batch), "--validators", "2", "--concurrency", "2",
                "--thread", "b2", "--budget", "0.007", "--json")  # fmt: skip
    assert first.exit_code == 1, first.output
    stopped = document(first)
    assert stopped["status"] == "budget_exceeded"
    finished = [r["id"] for r in stopped["results"]]
    assert finished
    assert stopped["unfinished"]
    assert sorted(finished + stopped["unfinished"]) == sorted(f"i{n}" for n in range(40))
    rest = document(cli("validate", "--thread", "b2", "--resume", "--budget", "10", "--json"))
    assert rest["status"] == "completed"
    assert [r["id"] for r in rest["results"]] == [f"i{n}" for n in range(40)]
    kept = {r["id"]: r for r in rest["results"]}
    assert all(kept[r["id"]] == r for r in stopped["results"])  # finished items kept as they were
    # every item reached the model once over both runs (a stopped chunk's verdicts were cached)
    assert stopped["this_run"]["calls"] + rest["this_run"]["calls"] == 40 * 2


def test_resume_of_an_unknown_batch_or_a_reused_id_is_one_line(tmp_path: Path) -> None:
    batch = tmp_path / "items.jsonl"
    batch.write_text('"Ovens are hot."\n', encoding="utf-8")
    assert cli("validate", "--batch", str(batch), "--thread", "b3", "--json").exit_code in (0, 3)
    reused = cli("validate", "--batch", str(batch), "--thread", "b3")
    assert reused.exit_code == 2
    assert "batch 'b3' already exists" in reused.stderr
    unknown = cli("validate", "--batch", str(batch), "--thread", "nope", "--resume")
    assert unknown.exit_code == 2
    assert "unknown batch 'nope'" in unknown.stderr


def test_threads_show_or_history_of_a_local_batch_says_it_is_one(tmp_path: Path) -> None:
    batch = tmp_path / "items.jsonl"
    batch.write_text('"Ovens are hot."\n', encoding="utf-8")
    assert cli("validate", "--batch", str(batch), "--thread", "b4", "--json").exit_code in (0, 3)
    for command in ("show", "history"):  # not "no threads yet", nor "unknown thread"
        shown = cli("threads", command, "b4")
        assert shown.exit_code == 2
        assert shown.stderr.strip().splitlines() == [
            "error: 'b4' is a local batch (validate --batch), not a thread: `multiagent validate "
            "--thread b4 --resume` prints its results (and finishes it if it stopped)"
        ]


def test_a_batch_another_process_runs_is_not_resumed_beside_it(tmp_path: Path) -> None:
    from multiagent.commands._batch_run import batch_lock_path

    batch = tmp_path / "items.jsonl"
    batch.write_text("".join(json.dumps(i) + "\n" for i in numbered_items(4)), encoding="utf-8")
    first = cli("validate", "--batch", str(batch), "--thread", "b4", "--budget", "0.001", "--json")
    assert first.exit_code == 1, first.output  # stopped on its budget, resumable
    lock = batch_lock_path(load_settings(), "b4")
    holder = subprocess.Popen(  # a process running the batch: it holds the batch's lock
        [sys.executable, "-c", HOLD_LOCK, str(lock)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == "held\n"
        refused = cli("validate", "--thread", "b4", "--resume", "--budget", "10")
        assert refused.exit_code == 2, refused.output
        assert refused.stderr.splitlines() == [
            "error: batch 'b4' is running in another process; wait for it to end, or stop it "
            "and then resume"
        ]
    finally:
        holder.kill()
        holder.wait()
    rest = document(cli("validate", "--thread", "b4", "--resume", "--budget", "10", "--json"))
    assert rest["status"] == "completed"


def test_a_new_batch_holds_its_lock_while_it_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # only a resume held it: a resume started beside a new batch validated its items again
    import multiagent.graphs.batch as batch_module
    from multiagent.commands._batch_run import _hold_batch

    real = batch_module.batch_cross_validate
    beside: list[str] = []

    def resumed_beside(*args: Any, **kwargs: Any) -> Any:
        try:
            fd = _hold_batch(load_settings(), str(kwargs["thread_id"]))
        except UsageError as exc:
            beside.append(str(exc))
        else:
            os.close(fd)
            beside.append("resumed beside it")
        return real(*args, **kwargs)

    monkeypatch.setattr(batch_module, "batch_cross_validate", resumed_beside)
    batch = batch_file(tmp_path, 2)
    named = document(cli("validate", "--batch", str(batch), "--thread", "b7", "--json"))
    unnamed = document(cli("validate", "--batch", str(batch), "--json"))
    assert beside == [
        f"batch {thread!r} is running in another process; wait for it to end, or stop it and "
        "then resume"
        for thread in ("b7", unnamed["thread_id"])
    ]
    assert named["status"] == unnamed["status"] == "completed"


def test_a_text_given_to_resume_a_batch_is_refused_naming_the_batch(tmp_path: Path) -> None:
    batch = tmp_path / "items.jsonl"
    batch.write_text('"Ovens are hot."\n', encoding="utf-8")
    assert cli("validate", "--batch", str(batch), "--thread", "b5", "--json").exit_code in (0, 3)
    refused = cli("validate", "Ovens are hot.", "--thread", "b5", "--resume")
    assert refused.exit_code == 2, refused.output
    assert refused.stderr.splitlines() == [
        "error: 'b5' is a batch, not a thread of one text; leave TEXT out to resume it: "
        "multiagent validate --thread b5 --resume"
    ]


def test_a_batch_writes_no_blank_line_to_a_stderr_that_is_no_terminal(tmp_path: Path) -> None:
    batch = tmp_path / "items.jsonl"
    batch.write_text('"Ovens are hot."\n', encoding="utf-8")
    done = cli("validate", "--batch", str(batch), "--thread", "b6")
    assert done.exit_code in (0, 3), done.output
    assert done.stderr == ""  # a progress bar is for a terminal; elsewhere it left an empty line
    unknown = cli("validate", "--batch", str(batch), "--thread", "nope", "--resume")
    assert unknown.exit_code == 2
    assert unknown.stderr == "error: unknown batch 'nope'; nothing to resume\n"


@pytest.mark.parametrize("limit", [0, -1])
def test_a_concurrency_below_one_is_refused_not_replaced_by_the_default(limit: int) -> None:
    with pytest.raises(UsageError, match=f"max_concurrency must be at least 1, got {limit}"):
        batch_cross_validate(["Ovens are hot."], max_concurrency=limit)


def test_bench_scale_linear_reports_per_item_cost_per_size() -> None:
    result = cli("bench", "scale", "--linear", "--sizes", "20,60", "--no-report", "--json")
    assert result.exit_code == 0, result.output
    doc = document(result)
    assert [s["size"] for s in doc["sizes"]] == [20, 60]
    assert [s["finished"] for s in doc["sizes"]] == [20, 60]
    assert [s["calls"] for s in doc["sizes"]] == [40, 120]
    assert doc["target"]["max_growth"] == 1.5
    bad = cli("bench", "scale", "--linear", "--sizes", "10,x")
    assert bad.exit_code == 2
    assert "--sizes must be comma-separated integers, got '10,x'" in bad.stderr


class _Threads(BaseCallbackHandler):
    """The threads model calls start on."""

    def __init__(self) -> None:
        self.seen: set[int] = set()

    def on_chat_model_start(self, *args: Any, **kwargs: Any) -> None:
        self.seen.add(threading.get_ident())


def test_a_chunk_taking_one_call_at_a_time_runs_its_validators_on_the_callers_thread() -> None:
    context = build_context(load_settings())
    items = numbered_items(3)
    threads = _Threads()
    one = run_chunk(
        "c-one", items, validators=["factual_accuracy", "logical_consistency"], threshold=0.5,
        context=context, max_concurrency=1, callbacks=[threads],
    )  # fmt: skip
    assert one.status == "completed"
    assert len(one.records) == 3
    assert threads.seen == {threading.get_ident()}  # no pool of one thread in between

    pooled = _Threads()
    two = run_chunk(
        "c-two", numbered_items(4)[3:], validators=["factual_accuracy", "logical_consistency"],
        threshold=0.5, context=context, max_concurrency=2, callbacks=[pooled],
    )  # fmt: skip
    assert two.status == "completed"
    assert threading.get_ident() not in pooled.seen


def test_a_chunk_is_no_live_run_but_its_limiters_are_sampled_meanwhile(tmp_path: Path) -> None:
    settings = load_settings(home=tmp_path)
    context = build_context(settings)
    writer = live_writer(settings.home)
    flushed: list[int] = []

    class Sampler(BaseCallbackHandler):
        """Flushes the writer while the chunk's first call runs: a limiter sample is due."""

        def on_chat_model_start(self, *args: Any, **kwargs: Any) -> None:
            if not flushed:
                writer._last_sample = 0.0
                writer.flush()
                flushed.append(1)

    outcome = run_chunk(
        "c-live", numbered_items(2), validators=["factual_accuracy"], threshold=0.5,
        context=context, max_concurrency=1, callbacks=[Sampler()],
    )  # fmt: skip
    assert outcome.status == "completed"
    writer.flush()
    with closing(sqlite3.connect(writer.path)) as conn:
        runs = conn.execute("SELECT thread_id FROM runs").fetchall()
        samples = conn.execute("SELECT model FROM limiter").fetchall()
    assert runs == []  # the chunk did not list itself on the live runs page
    assert samples  # but the backpressure page got the process's limiter while it ran

    writer._last_sample = 0.0
    writer.flush()  # no work running: no sample
    with closing(sqlite3.connect(writer.path)) as conn:
        assert conn.execute("SELECT count(*) FROM limiter").fetchone()[0] == len(samples)
