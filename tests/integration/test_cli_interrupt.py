"""Ctrl-C stops a run cleanly at any step: exit 130, the thread marked ``interrupted`` with the
finished steps kept, the resume command printed; resuming finishes it. A real process receives a
real SIGINT; the simulator's time to first token holds each step open until the signal lands.

The first Ctrl-C says at once, on stderr, what the run still does (the answers a provider is
generating finish) and how to resume; it also ends a run's wait for agent memory that a
compaction holds."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx2
import pytest

from multiagent.sim.config import SimServerConfig
from multiagent.sim.runner import run_sim_server
from tests._procs import park_at, stop

pytestmark = pytest.mark.slow

TASK = "Plan a product launch for a small bakery"
#: What the live view prints when each agent's step ended well.
STEP_DONE = {
    "planner": "✓ plan ",
    "researcher": "✓ work · researcher",
    "critic": "✓ work · critic",
    "synthesizer": "✓ synthesize",
}


def _env(ttft: float, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "MULTIAGENT_SIM__TTFT_S": str(ttft),
        "MULTIAGENT_SIM__TOKEN_LATENCY_S": "0",
        **extra,
    }


def _stopping_line(err: str) -> str:
    """The one line the first Ctrl-C printed on stderr."""
    [line] = [line for line in err.splitlines() if line.startswith("Stopping: ")]
    return line


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "multiagent", *args],
        env=_env(0), capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def _interrupt_at(marker: str, *args: str) -> tuple[int, str, str]:
    """Start the CLI, send SIGINT once ``marker`` is on its stdout (a step has started and is
    waiting for its first token), and return its exit code and output."""
    process = subprocess.Popen(
        [sys.executable, "-m", "multiagent", *args],
        env=_env(4.0), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert process.stdout is not None
    seen: list[str] = []
    for line in process.stdout:
        seen.append(line)
        if marker in line:
            process.send_signal(signal.SIGINT)
            break
    out, err = process.communicate(timeout=120)
    return process.returncode, "".join(seen) + out, err


def _thread(thread: str) -> dict[str, Any]:
    rows = json.loads(_cli("threads", "list", "--json").stdout)["threads"]
    found: dict[str, Any] = next(row for row in rows if row["thread_id"] == thread)
    return found


@pytest.mark.parametrize(
    ("marker", "step", "done_before"),
    [
        ("▸ plan", "plan", set()),
        ("▸ work · critic", "work", {"plan"}),  # the parallel step
        ("▸ synthesize", "synthesize", {"plan", "work"}),
    ],
)
def test_ctrl_c_at_any_step_marks_the_thread_interrupted_and_resume_finishes_it(
    isolated_env: Path, marker: str, step: str, done_before: set[str]
) -> None:
    thread = "t-" + marker.split()[1]
    code, out, err = _interrupt_at(
        marker, "run", TASK, "--agents", "researcher,critic", "--thread", thread,
        "--memory", "off",
    )  # fmt: skip
    assert code == 130, err
    assert "Traceback" not in err
    assert f"multiagent run --thread {thread} --resume" in out
    # said at once, not left to the closing report: the simulator's waits stop with the signal
    assert _stopping_line(err) == (
        "Stopping: no new model call starts; Ctrl-C again to stop now. Resume with: "
        f"multiagent run --thread {thread} --resume"
    )
    for agent, step_done in STEP_DONE.items():  # an agent stopped is not shown as done too
        assert not (f"✗ {agent} " in out and step_done in out), out
    row = _thread(thread)
    assert row["status"] == "interrupted"
    shown = json.loads(_cli("threads", "show", thread, "--json").stdout)
    # the steps before are kept; the step the signal landed in may have let its call finish
    # (a call in flight is not cut off) and then it is kept too, never half
    used = {u["node"] for u in shown["values"]["usage"]}
    assert used - {step} == done_before
    assert ("output" in shown["values"]) == ("synthesize" in used)

    again = _cli("run", "--thread", thread, "--resume", "--memory", "off", "--json")
    assert again.returncode == 0, again.stderr
    document = json.loads(again.stdout)
    assert document["status"] == "completed"
    assert document["output"]
    assert _thread(thread)["status"] == "completed"
    # nothing finished before the signal ran again
    nodes = [u["node"] for u in json.loads(_cli("threads", "show", thread, "--json").stdout)[
        "values"]["usage"]]  # fmt: skip
    assert sorted(nodes) == ["plan", "synthesize", "work", "work"]


def test_ctrl_c_in_a_meeting_prints_the_meeting_resume_command(isolated_env: Path) -> None:
    code, out, err = _interrupt_at(
        "▸ moderate", "meeting", "Do we need a website?", "--participants", "critic,writer",
        "--rounds", "1", "--thread", "m-int", "--memory", "off",
    )  # fmt: skip
    assert code == 130
    assert "multiagent meeting --thread m-int --resume" in out
    assert _stopping_line(err).endswith("Resume with: multiagent meeting --thread m-int --resume")
    assert _thread("m-int")["status"] == "interrupted"


def test_the_first_ctrl_c_names_the_generated_thread_to_resume(isolated_env: Path) -> None:
    code, out, err = _interrupt_at("▸ plan", "run", TASK, "--memory", "off")
    assert code == 130
    resume = _stopping_line(err).split("Resume with: ")[1]
    assert resume in out  # the closing report's thread: the one the run was given
    thread = resume.split("--thread ")[1].split()[0]
    assert _thread(thread)["status"] == "interrupted"


def test_the_first_ctrl_c_says_how_many_answers_a_provider_is_still_generating(
    isolated_env: Path,
) -> None:
    """Through the ``openai`` provider the answers the server is generating are read to their
    end and kept: the line counts them, and resuming runs only what they left."""
    # long enough that both answers are still at the server when the line counts them
    with run_sim_server(SimServerConfig(rpm=1e6, tpm=1e9, ttft_s=8.0)) as url:
        stats = url.removesuffix("/v1") + "/sim/stats"
        process = subprocess.Popen(
            [sys.executable, "-m", "multiagent", "run", TASK, "--agents", "researcher,critic",
             "--thread", "real", "--memory", "off"],
            env=_env(0, MULTIAGENT_PROVIDER="openai", OPENAI_API_KEY="sim",
                     OPENAI_BASE_URL=url),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert process.stdout is not None
        for line in process.stdout:
            if "▸ work · critic" in line:
                break
        while httpx2.get(stats).json()["in_flight"] < 2:  # both workers' calls are at the server
            assert process.poll() is None
        process.send_signal(signal.SIGINT)
        _out, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert _stopping_line(err) == (
        "Stopping: finishing 2 answers in flight; Ctrl-C again to stop now. Resume with: "
        "multiagent run --thread real --resume"
    )
    shown = json.loads(_cli("threads", "show", "real", "--json").stdout)
    assert sorted(u["node"] for u in shown["values"]["usage"]) == ["plan", "work", "work"]


def test_the_first_ctrl_c_ends_a_run_s_wait_for_memory_that_a_compaction_holds(
    isolated_env: Path, tmp_path: Path
) -> None:
    """A compaction holds agent memory (parked mid-way, its lock held); a run whose agents
    recall waits for it, and Ctrl-C ends that wait instead of the compaction's end. In
    ``--json`` mode the line goes to stderr and stdout stays one JSON document."""
    first = _cli("run", TASK, "--agents", "researcher,critic", "--memory", "lexical")
    assert first.returncode == 0, first.stderr  # the agents now have memory to recall
    go = tmp_path / "compaction-go"
    compaction = park_at(
        "compact", "persistence", "compact", tmp_path=tmp_path,
        env={"MULTIAGENT_CRASH_POINT_GO": str(go)},
    )  # fmt: skip
    try:
        run = subprocess.Popen(
            [sys.executable, "-m", "multiagent", "run", TASK, "--agents", "researcher,critic",
             "--thread", "mem", "--memory", "lexical", "--json"],
            env=_env(0), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        while not _planned("mem"):  # then the workers recall, and wait for the compaction
            assert run.poll() is None, run.communicate()
        run.send_signal(signal.SIGINT)
        out, err = run.communicate(timeout=300)  # a guard: without the stop, 120 s of waiting
    finally:
        go.touch()
        _out, compacted = compaction.communicate(timeout=120)
    assert compaction.returncode == 0, compacted
    assert run.returncode == 130, err
    assert json.loads(out)["status"] == "interrupted"  # stdout: the one document
    assert _stopping_line(err).endswith("Resume with: multiagent run --thread mem --resume")
    assert "Traceback" not in err
    again = _cli("run", "--thread", "mem", "--resume", "--memory", "lexical", "--json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["status"] == "completed"


def _planned(thread: str) -> bool:
    """Whether ``thread``'s plan step is stored."""
    shown = _cli("threads", "show", thread, "--json")
    if shown.returncode != 0:  # not stored yet
        return False
    return any(u["node"] == "plan" for u in json.loads(shown.stdout)["values"].get("usage", []))


#: Runs the ``multiagent`` entry point with a real SIGINT sent to the process as the CLI's
#: modules import (when ``typer`` is first looked up): Ctrl-C before any command exists.
_CTRL_C_WHILE_IMPORTING = """
import os, signal, sys

class CtrlC:
    def find_spec(self, name, path=None, target=None):
        if name == "typer":
            os.kill(os.getpid(), signal.SIGINT)
        return None

sys.meta_path.insert(0, CtrlC())
sys.argv = ["multiagent", "--help"]
from multiagent.__main__ import main
main()
"""


def test_ctrl_c_while_the_cli_imports_says_interrupted() -> None:
    ended = subprocess.run(
        [sys.executable, "-c", _CTRL_C_WHILE_IMPORTING],
        env={**_env(0), "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
        capture_output=True, text=True, timeout=120, check=False,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # even run as a job
    )  # fmt: skip
    assert ended.returncode == 130
    assert ended.stderr == "interrupted\n"
    assert ended.stdout == ""  # no help: no command ran


def _stop_now_at_plan(process: subprocess.Popen[str], url: str) -> tuple[str, str]:
    """Ctrl-C twice once the plan's call is at the server; the command's output."""
    assert process.stdout is not None
    for line in process.stdout:
        if "▸ plan" in line:
            break
    stats = url.removesuffix("/v1") + "/sim/stats"
    while httpx2.get(stats).json()["in_flight"] < 1:  # the call is at the server
        assert process.poll() is None
    process.send_signal(signal.SIGINT)
    assert process.stderr is not None
    for line in process.stderr:  # the first one handled: the second is one more
        if line.startswith("Stopping: "):
            break
    process.send_signal(signal.SIGINT)
    return process.communicate(timeout=120)


def test_the_second_ctrl_c_cuts_an_openai_answer_still_waiting_for_its_first_token(
    isolated_env: Path,
) -> None:
    """Stopping now cuts the exchange of a call whose server has not sent a token yet: its
    thread, blocked in a socket read, would otherwise hold the command until the answer came
    (the bound of ``communicate`` is the failure). The call is recorded as cancelled, not as a
    failed (or retried) one, and the thread resumes."""
    with run_sim_server(SimServerConfig(rpm=1e6, tpm=1e9, ttft_s=600.0)) as url:
        env = _env(
            0, MULTIAGENT_PROVIDER="openai", OPENAI_API_KEY="sim", OPENAI_BASE_URL=url,
            # no timeout ends the wait first
            MULTIAGENT_RATE_LIMIT__REQUEST_TIMEOUT_S="1200",
        )  # fmt: skip
        process = subprocess.Popen(
            [sys.executable, "-m", "multiagent", "run", TASK, "--thread", "cut",
             "--memory", "off"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            out, err = _stop_now_at_plan(process, url)
        finally:
            stop(process)  # still waiting for the answer, when the exchange was not cut
    assert process.returncode == 130, err
    assert "interrupted: stopped by Ctrl-C" in out
    assert "multiagent run --thread cut --resume" in out
    assert _thread("cut")["status"] == "interrupted"
    calls = json.loads(_cli("metrics", "show", "--json").stdout)["calls"]
    assert (calls["cancelled"], calls["error"]) == (1, 0)
    again = _cli("run", "--thread", "cut", "--resume", "--memory", "off", "--json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["status"] == "completed"
