"""Leaving without the interpreter's teardown keeps every step of its exit anyone can see."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from multiagent._exit import exit_code_of

_SCRIPT = """
import atexit, sys, threading, time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from multiagent._exit import exit_now

out = Path(sys.argv[1])
atexit.register(lambda: (out / "atexit").write_text("ran"))

def late(name):
    time.sleep(0.3)
    (out / name).write_text("done")

threading.Thread(target=late, args=("thread",)).start()  # not a daemon: waited for
ThreadPoolExecutor(max_workers=1).submit(late, "pool")  # never shut down: drained at exit
print("buffered, not flushed", end="")
exit_now(3)
"""


def test_threads_pools_atexit_and_output_all_finish_first(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", _SCRIPT, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 3
    assert done.stdout == "buffered, not flushed"
    assert (tmp_path / "thread").read_text() == "done"
    assert (tmp_path / "pool").read_text() == "done"
    assert (tmp_path / "atexit").read_text() == "ran"


@pytest.mark.parametrize(("code", "status"), [(None, 0), (0, 0), (2, 2), (130, 130)])
def test_exit_codes_read_as_the_interpreter_reads_them(code: int | None, status: int) -> None:
    assert exit_code_of(SystemExit(code)) == status


def test_a_message_exits_one_and_is_printed(capsys: pytest.CaptureFixture[str]) -> None:
    assert exit_code_of(SystemExit("stopped: disk full")) == 1
    assert capsys.readouterr().err == "stopped: disk full\n"


def test_the_cli_exits_with_its_usage_status() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "multiagent", "run", "--bogus"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith("error: No such option: --bogus;")
