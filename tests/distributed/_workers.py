"""What the queue tests share: ``multiagent worker`` subprocesses (killed when a test ends), the
CLI through typer's runner, a batch file of numbered items, waiting for a condition, and whether a
queued run's plan is on disk."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner, Result

from multiagent.cli import app
from multiagent.distributed.queue import batch_key, stream_key
from multiagent.persistence.checkpointer import open_checkpointer
from multiagent.policies import load_settings
from tests.integration._batch_cli import batch_file

__all__ = [
    "FAST",
    "Workers",
    "batch_file",
    "cli",
    "openai_env",
    "plan_done",
    "sim_stats",
    "stop_a_tight_batch",
    "wait_until",
]

#: A provider limit far above what the tests send (pacing is not what they test).
FAST = {
    "MULTIAGENT_RATE_LIMIT__REQUESTS_PER_MINUTE": "600000",
    "MULTIAGENT_RATE_LIMIT__TOKENS_PER_MINUTE": "600000000",
}


class Workers:
    """``multiagent worker --json`` subprocesses (with :data:`FAST` limits), killed at close."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[str]] = []

    def start(self, *args: str, **env: str) -> subprocess.Popen[str]:
        """Start ``multiagent worker --json ARGS`` with ``env`` added to the environment."""
        proc = subprocess.Popen(
            [sys.executable, "-m", "multiagent", "worker", "--json", *args],
            env={**os.environ, **FAST, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        self.procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[str]) -> dict[str, Any]:
        """SIGTERM ``proc``, and return the stats it prints as it exits 0."""
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        return dict(json.loads(out))

    def stacks(self) -> str:
        """Every live worker's thread stacks (SIGUSR1) and stderr; the workers are killed.

        For a failed test's report: a worker that never finished shows where it waits.
        """
        texts = []
        for proc in self.procs:
            if proc.poll() is not None:
                continue
            proc.send_signal(signal.SIGUSR1)
            time.sleep(1.0)  # the dump is written from the worker's signal handler
            proc.kill()
            _out, err = proc.communicate()
            texts.append(f"--- worker {proc.pid} ---\n{err}")
        return "\n".join(texts)

    def close(self) -> None:
        """Kill the workers still running."""
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()


def cli(*args: str) -> Result:
    """``multiagent ARGS`` in this process."""
    return CliRunner().invoke(app, list(args))


def cli_json(*args: str) -> dict[str, Any]:
    """The one JSON document a command that succeeded printed with ``--json``."""
    result = cli(*args, "--json")
    assert result.exit_code == 0, result.output
    return dict(json.loads(result.stdout))


def work_until_idle(
    client: Any, queue: str, *, claim_idle_s: float | None = None
) -> dict[str, Any]:
    """Run an in-process worker (with the settings of now) on ``queue`` until nothing is left
    for it to take; its stats. ``claim_idle_s``: how long another's pending entry waits before
    this one reclaims it (the worker's default when ``None``)."""
    from multiagent.distributed.worker import QueueWorker
    from multiagent.nodes.context import build_context

    options = {} if claim_idle_s is None else {"claim_idle_s": claim_idle_s}
    worker = QueueWorker(client, queue=queue, context=build_context(load_settings()), **options)
    return worker.run(idle_exit_s=1.0).as_dict()


def queue_fast_batch(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, *, items: int, queue: str
) -> str:
    """Queue a batch of ``items`` numbered items on ``queue`` for 2 validators, with the FAST
    profile values set; return its id."""
    for name, value in FAST.items():
        monkeypatch.setenv(name, value)
    queued = cli(
        "validate", "--batch", str(batch_file(tmp_path, items)), "--queue", queue,
        "--validators", "2", "--json",
    )  # fmt: skip
    assert queued.exit_code == 0, queued.output
    return str(json.loads(queued.stdout)["batch_id"])


def wait_until(condition: Any, *, seconds: float = 120.0) -> None:
    """Poll ``condition`` until it holds; fail the test after ``seconds``."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def openai_env(monkeypatch: pytest.MonkeyPatch, base_url: str) -> dict[str, str]:
    """The ``openai`` provider pointed at the simulator at ``base_url``, for this process and
    (returned) for workers: every call they make is one the simulator serves and counts."""
    env = {"MULTIAGENT_PROVIDER": "openai", "OPENAI_BASE_URL": base_url, "OPENAI_API_KEY": "k"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


def sim_stats(base_url: str) -> dict[str, Any]:
    """What the simulator at ``base_url`` served so far (``/sim/stats``)."""
    found: dict[str, Any] = httpx.get(f"{base_url.removesuffix('/v1')}/sim/stats").json()
    return found


def plan_done(run_id: str) -> bool:
    """Whether queued run ``run_id`` has its plan in the shared checkpointer."""
    with open_checkpointer(load_settings()) as saver:
        found = saver.get_tuple({"configurable": {"thread_id": run_id}})
    return found is not None and bool(found.checkpoint["channel_values"].get("plan"))


def stop_a_tight_batch(
    workers: Workers, client: Any, tmp_path: Path, *, queue: str, budget: float
) -> list[subprocess.Popen[str]]:
    """Queue 12 items as batch ``tight`` (2 validators, ``budget``), start two workers on
    ``queue``, and wait until the budget stopped it and every entry ended; return the workers."""
    queued = cli(
        "validate", "--batch", str(batch_file(tmp_path, 12)), "--queue", queue, "--validators",
        "2", "--budget", str(budget), "--thread", "tight", "--json",
    )  # fmt: skip
    assert queued.exit_code == 0, queued.output
    procs = [workers.start("--queue", queue, "--concurrency", "2") for _ in range(2)]
    wait_until(lambda: client.hget(batch_key("tight"), "stopped") is not None)
    wait_until(lambda: client.xlen(stream_key(queue)) == 0)  # every entry ended
    return procs
