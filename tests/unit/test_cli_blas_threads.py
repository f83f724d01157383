"""The ``multiagent`` entry point runs numpy's BLAS on one thread, unless the user chose."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from multiagent.cli import BLAS_THREAD_VARIABLES

# the console script's path: import the CLI, run main(), then numpy as a memory run would
_CHILD = """
import json, os, sys
import multiagent.cli as cli
numpy_before = "numpy" in sys.modules
sys.argv = ["multiagent", "--version"]

def stay(code):  # main() ends the process; this child goes on to import numpy
    raise SystemExit(code)

cli.exit_now = stay
try:
    cli.main()
except SystemExit:
    pass
import numpy
try:
    from threadpoolctl import threadpool_info
except ImportError:
    blas = None
else:
    blas = [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]
variables = {name: os.environ.get(name) for name in cli.BLAS_THREAD_VARIABLES}
print("RESULT " + json.dumps([numpy_before, variables, blas]))
"""


def _run(extra: dict[str, str]) -> tuple[bool, dict[str, str | None], list[int] | None]:
    env = {k: v for k, v in os.environ.items() if k not in BLAS_THREAD_VARIABLES}
    done = subprocess.run(
        [sys.executable, "-c", _CHILD],
        env={**env, **extra},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    line = next(x for x in done.stdout.splitlines() if x.startswith("RESULT "))
    numpy_before, variables, blas = json.loads(line.removeprefix("RESULT "))
    return bool(numpy_before), variables, blas


def test_the_cli_entry_sets_one_blas_thread_before_numpy_is_imported() -> None:
    numpy_before, variables, blas = _run({})
    assert numpy_before is False  # importing the CLI must not load numpy (too late then)
    assert variables == dict.fromkeys(BLAS_THREAD_VARIABLES, "1")
    if blas:  # threadpoolctl installed and numpy's BLAS visible to it
        assert set(blas) == {1}


@pytest.mark.parametrize("name", BLAS_THREAD_VARIABLES)
def test_a_user_blas_thread_setting_wins(name: str) -> None:
    _numpy_before, variables, _blas = _run({name: "3"})
    assert variables == {**dict.fromkeys(BLAS_THREAD_VARIABLES, "1"), name: "3"}
