"""Live runs and limiter samples through the shared file, read back as the dashboard shows them."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from uuid import uuid4

import pytest
from langchain_core.runnables.config import merge_configs
from langgraph.checkpoint.memory import InMemorySaver

from multiagent._interrupt import StopRequested
from multiagent.dashboard.data import RECENT_RUNS, backpressure, live_runs
from multiagent.errors import BudgetExceededError
from multiagent.graphs.runner import run_workflow
from multiagent.graphs.workflows import compile_workflow
from multiagent.nodes.context import build_context
from multiagent.observability.live import live_writer
from multiagent.observability.live_recorder import LiveRunRecorder
from multiagent.observability.summary import quantile
from multiagent.observability.tracing import run_config
from multiagent.policies import load_settings


@pytest.mark.slow
def test_a_cli_run_in_another_process_is_recorded_with_nodes_streams_tokens_and_cost(
    isolated_env: Path,
) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "multiagent", "run", "Plan a bakery launch", "--thread", "r-1",
         "--budget", "0.75"],
        capture_output=True, text=True, timeout=180, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    runs = live_runs(load_settings(home=isolated_env))
    assert runs["running"] == []
    (run,) = runs["finished"]
    assert run["thread_id"] == "r-1"
    assert run["status"] == "completed"
    assert run["tokens_in"] > 0
    assert run["tokens_out"] > 0
    assert run["cost_usd"] > 0
    assert run["budget_usd"] == 0.75  # the run's --budget, not the profile's
    assert run["budget_left_usd"] == pytest.approx(run["budget_usd"] - run["cost_usd"])
    assert run["graph"]["nodes"] == ["plan", "review", "work", "synthesize"]


def test_limiter_samples_of_two_processes_add_up_per_model(tmp_path: Path) -> None:
    home = tmp_path / "home"
    writer = live_writer(home)
    insert = "INSERT INTO limiter VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
    for pid, ok_before, ok_after in ((1, 0, 10), (2, 5, 9)):
        writer.put(insert, (1000.0, pid, "openai", "m", 8, 3, 0, ok_before, 0))
        writer.put(insert, (1002.5, pid, "openai", "m", 8, 2, 4.0, ok_after, 2))
    writer.flush()
    found = backpressure(load_settings(home=home), minutes=5, now=1003.0)
    (limiter,) = found["limiters"]
    assert (limiter["provider"], limiter["model"], limiter["processes"]) == ("openai", "m", 2)
    assert limiter["in_flight"] == 4  # the latest sample of each process, summed
    assert limiter["paused_until"] == pytest.approx(1006.5)
    assert limiter["rate_limited"] == 4
    assert sum(limiter["series"]["goodput"]) * 2 == 14  # 10 + 4 answered calls in the window


def test_quantiles_interpolate_inside_the_histogram_buckets() -> None:
    buckets = {"0.1": 0.0, "0.5": 10.0, "1.0": 20.0, "+Inf": 20.0}
    assert quantile(buckets, 0.5) == pytest.approx(0.5)
    assert quantile(buckets, 0.25) == pytest.approx(0.3)
    assert quantile(buckets, 0.95) == pytest.approx(0.95)
    assert quantile({}, 0.5) == 0.0


def _gone_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_killed_runs_are_listed_among_the_finished_by_their_last_update(tmp_path: Path) -> None:
    home = tmp_path / "home"
    writer = live_writer(home)
    insert = (
        "INSERT INTO runs (thread_id, workflow, pid, status, started, updated) "
        "VALUES (?, 'orchestration', ?, ?, ?, ?)"
    )
    dead, hour_ago = _gone_pid(), time.time() - 3600  # recent: the writer trims past a day
    for n in range(RECENT_RUNS):  # killed mid-run an hour ago: left 'running' by a dead process
        writer.put(insert, (f"killed-{n}", dead, "running", hour_ago + n, hour_ago + n))
    writer.put(insert, ("done-now", dead, "completed", hour_ago + 600, hour_ago + 600))
    writer.flush()
    runs = live_runs(load_settings(home=home))
    assert runs["running"] == []
    finished = runs["finished"]
    assert len(finished) == RECENT_RUNS
    assert finished[0]["thread_id"] == "done-now"  # the latest, not hidden behind killed ones
    updated = [r["updated"] for r in finished]
    assert updated == sorted(updated, reverse=True)
    assert {r["status"] for r in finished[1:]} == {"lost"}


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (BudgetExceededError("over", spent_usd=0.5, budget_usd=0.5), "budget_exceeded"),
        (KeyboardInterrupt(), "interrupted"),
        (StopRequested(), "interrupted"),
        (GeneratorExit(), "interrupted"),  # its stream closed by its caller: a break
        (ValueError("boom"), "failed"),
    ],
)
def test_a_run_stopped_by_its_budget_or_ctrl_c_is_shown_as_the_cli_reports_it(
    tmp_path: Path, error: BaseException, status: str
) -> None:
    home = tmp_path / "home"
    recorder = LiveRunRecorder(home, thread_id="t-1", workflow="orchestration", budget_usd=0.5)
    root = uuid4()
    recorder.on_chain_start({}, {}, run_id=root)
    recorder.on_chain_error(error, run_id=root)
    recorder.writer.flush()
    (run,) = live_runs(load_settings(home=home))["finished"]
    assert run["status"] == status  # the status `multiagent run --json` reports


def test_a_run_resumed_after_approval_is_shown_completed_not_waiting(isolated_env: Path) -> None:
    settings = load_settings()
    outcome = run_workflow(
        "orchestration",
        {"task": "Plan a bakery launch", "require_approval": True},
        context=build_context(settings),
        checkpointer=InMemorySaver(),
        thread_id="r-approved",
        approver=lambda plan: True,  # answered at once: the run's loop resumes it
    )
    assert outcome.status == "completed"
    (run,) = live_runs(settings)["finished"]
    assert (run["thread_id"], run["status"]) == ("r-approved", "completed")


def test_a_run_whose_stream_its_caller_closed_is_shown_interrupted(isolated_env: Path) -> None:
    settings = load_settings()
    graph = compile_workflow("orchestration", checkpointer=InMemorySaver())
    traced = run_config(workflow="orchestration", settings=settings, thread_id="r-left")
    config = merge_configs({"configurable": {"thread_id": "r-left"}}, traced)
    for _ in graph.stream(
        {"task": "Plan a bakery launch"}, config, context=build_context(settings)
    ):
        break  # the caller leaves after the plan: the thread resumes from there
    (run,) = live_runs(settings)["finished"]
    assert (run["thread_id"], run["status"]) == ("r-left", "interrupted")
