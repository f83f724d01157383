"""The workflows through the ``openai`` provider against the simulator over HTTP on 127.0.0.1, and
a CLI run killed mid-way (SIGKILL) that resumes and finishes without re-running what was done."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from typer.testing import CliRunner

from multiagent.cli import app
from multiagent.commands._exit_codes import exit_code
from multiagent.sim.config import SimServerConfig
from multiagent.sim.runner import run_sim_server

runner = CliRunner()
TASK = "Plan a product launch for a small bakery"


@pytest.fixture(scope="module")
def sim_url() -> Iterator[str]:
    with run_sim_server(SimServerConfig(rpm=1e6, tpm=1e9)) as url:
        yield url


def _json(*args: str) -> dict[str, Any]:
    result = runner.invoke(app, list(args))
    document: dict[str, Any] = json.loads(result.stdout)
    # a completed validation exits 3 when consensus failed on an item: still a finished run
    assert result.exit_code == exit_code("completed", document.get("results")), result.output
    return document


def test_workflows_through_the_openai_provider(
    sim_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("MULTIAGENT_PROVIDER", "openai")
    monkeypatch.setenv("OPENAI_API_KEY", "sim")
    monkeypatch.setenv("OPENAI_BASE_URL", sim_url)
    before = httpx2.get(sim_url.removesuffix("/v1") + "/sim/stats").json()
    run = _json("run", TASK, "--agents", "researcher,critic", "--json", "--memory", "off")
    assert run["status"] == "completed"
    assert "small bakery" in run["output"]
    assert [c["agent"] for c in run["contributions"]] == ["researcher", "critic"]
    assert run["usage"]["input_tokens"] > 0
    meeting = _json(
        "meeting", "Do we need a website?", "--rounds", "1", "--json", "--memory", "off"
    )
    assert meeting["status"] == "completed"
    assert "Decisions:" in meeting["output"]
    batch = tmp_path / "items.jsonl"
    batch.write_text('"Ovens are hot."\n"Flour is milled grain."\n', encoding="utf-8")
    validated = _json("validate", "--batch", str(batch), "--json")
    assert validated["status"] == "completed"
    assert len(validated["verdicts"]) == 2 * 3
    assert validated["failures"] == []
    after = httpx2.get(sim_url.removesuffix("/v1") + "/sim/stats").json()
    calls = run["usage"]["calls"] + meeting["usage"]["calls"] + validated["usage"]["calls"]
    assert calls >= 4 + 5 + 6
    assert after["totals"]["successes"] - before["totals"]["successes"] == calls


def _checkpoints(database: Path, thread: str) -> int:
    if not database.exists():
        return 0
    try:
        connection = sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=1.0)
        try:
            row = connection.execute(
                "SELECT count(*) FROM checkpoints WHERE thread_id = ?", (thread,)
            ).fetchone()
        finally:
            connection.close()
    except sqlite3.OperationalError:  # the table is not there yet
        return 0
    return int(row[0])


def test_a_killed_run_resumes_and_finishes(isolated_env: Path) -> None:
    env = {**os.environ, "MULTIAGENT_SIM__TTFT_S": "0.6"}  # each call takes 0.6 s
    command = [sys.executable, "-m", "multiagent", "run", TASK, "--agents", "analyst,critic"]
    command += ["--thread", "killed", "--json", "--memory", "off"]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    database = isolated_env / "checkpoints.sqlite"
    deadline = time.monotonic() + 30
    try:
        # input, before the plan, after the plan: the agents are now working
        while _checkpoints(database, "killed") < 3:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the plan was never checkpointed"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=10)
        assert proc.stdout is not None
        assert proc.stderr is not None
        proc.stdout.close()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    killed = _json("threads", "show", "killed", "--json")
    assert killed["status"] == "interrupted"
    assert killed["values"].get("output") is None
    done = _json("run", "--thread", "killed", "--resume", "--json", "--memory", "off")
    assert done["status"] == "completed"
    assert done["output"]
    steps = [n["node"] for n in done["timings"]["steps"]]
    assert steps.count("plan") == 1  # the plan was done before the kill: not run again
    assert sorted(c["agent"] for c in done["contributions"]) == ["analyst", "critic"]
    assert done["this_run"]["calls"] == 3  # two agents and the synthesizer
