"""The bad-input suite's contract, checked for every generated case.

A bad value, wherever it comes from (an argument, an option, a variable, a file, a damaged
database), ends with the documented exit code (2), exactly one line on stderr that starts with
``error: ``, no traceback, and a data directory whose every file is byte-identical to before.
Cases run in-process with typer's ``CliRunner`` against a copy of a data directory that a real
run filled (checkpoints, agent memory, metrics history, caches).
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from multiagent.cli import app

BASE_ENV = {"MULTIAGENT_SIM__TTFT_S": "0", "MULTIAGENT_SIM__TOKEN_LATENCY_S": "0"}


def digests(home: Path) -> dict[str, str]:
    """Every file under ``home`` (journals too) with the SHA-256 of its bytes."""
    if not home.exists():
        return {}
    return {
        str(path.relative_to(home)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(home.rglob("*"))
        if path.is_file()
    }


@dataclass
class Outcome:
    """What one command did."""

    args: list[str]
    exit_code: int
    stdout: str
    stderr: str
    exception: BaseException | None


def invoke(
    args: list[str], *, home: Path, env: Mapping[str, str] | None = None, input: str | None = None
) -> Outcome:
    """Run ``multiagent ARGS`` in-process with ``home`` as the data directory."""
    result = CliRunner().invoke(
        app, args, env={**BASE_ENV, "MULTIAGENT_HOME": str(home), **(env or {})}, input=input
    )
    return Outcome(args, result.exit_code, result.stdout, result.stderr, result.exception)


def assert_refused(outcome: Outcome, *, code: int = 2, needle: str | None = None) -> str:
    """The contract: ``code``, one ``error:`` line, no traceback; returns that line."""
    shown = f"{outcome.args!r}: exit {outcome.exit_code}, stderr {outcome.stderr!r}"
    assert not isinstance(outcome.exception, Exception) or isinstance(
        outcome.exception, SystemExit
    ), f"{shown}; raised {outcome.exception!r}"
    assert outcome.exit_code == code, shown
    assert "Traceback" not in outcome.stdout + outcome.stderr, shown
    lines = outcome.stderr.splitlines()
    assert len(lines) == 1, shown
    assert lines[0].startswith("error: "), shown
    assert lines[0].isprintable(), shown
    if needle is not None:
        assert needle in lines[0], shown
    return lines[0]


@pytest.fixture(scope="session")
def filled_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data directory after one real run with agent memory: every store has a file."""
    home = tmp_path_factory.mktemp("filled") / "home"
    task = "Plan a product launch for a small bakery"
    outcome = invoke(
        ["run", task, "--agents", "researcher,critic", "--memory", "lexical", "--no-stream"],
        home=home,
    )
    assert outcome.exit_code == 0, outcome.stderr
    assert invoke(["persistence", "backup"], home=home).exit_code == 0
    return home


@contextmanager
def copy_of(template: Path) -> Iterator[Path]:
    """A fresh copy of ``template`` for one generated case."""
    with tempfile.TemporaryDirectory() as directory:
        home = Path(directory) / "home"
        shutil.copytree(template, home)
        yield home


def refused_unchanged(
    args: list[str],
    *,
    template: Path,
    env: Mapping[str, str] | None = None,
    needle: str | None = None,
    input: str | None = None,
) -> str:
    """Run one bad case on a copy of ``template``; check the contract and the bytes."""
    with copy_of(template) as home:
        before = digests(home)
        line = assert_refused(invoke(args, home=home, env=env, input=input), needle=needle)
        assert digests(home) == before, f"{args!r} changed the data directory"
    return line
