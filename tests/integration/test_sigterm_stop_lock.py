"""A SIGTERM that lands while the main thread waits on the stop event: the command still ends.

``wait_until_stopped`` (``metrics serve``, ``sim serve``) and ``persistence scheduler`` wait on a
``threading.Event`` that their SIGTERM handler sets. The handler runs on the main thread between
two of its bytecodes; landing inside ``Event.wait`` (before it releases the event's lock, or after
it takes it back), its ``set`` waited for a lock its own thread held: the process hung for good,
deaf to further SIGTERMs. Each process here sends itself that SIGTERM at that moment: the main
thread's first wait on the event the handler sets holds the event's lock meanwhile.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

#: A bound on the process's exit; it needs a second or two of it.
PATIENCE_S = 60.0

#: Replaces ``threading.Event`` before the command is imported (see the module docstring).
_SIGNALLED_INSIDE_WAIT = """
import os, signal, sys, threading

class SignalledInsideWait(threading.Event):
    fired = False

    def wait(self, timeout=None):
        handler = signal.getsignal(signal.SIGTERM)
        cells = getattr(handler, "__closure__", None) or ()
        stops = any(cell.cell_contents is self for cell in cells)  # the event it sets
        main = threading.current_thread() is threading.main_thread()
        if main and stops and not SignalledInsideWait.fired:
            SignalledInsideWait.fired = True
            with self._cond:  # the lock Event.wait holds until its Condition waits
                os.kill(os.getpid(), signal.SIGTERM)  # the handler runs as the call returns
        return super().wait(timeout)

threading.Event = SignalledInsideWait
"""


def _run(code: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            [sys.executable, "-c", _SIGNALLED_INSIDE_WAIT + code],
            env=env, capture_output=True, text=True, timeout=PATIENCE_S,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        pytest.fail("the SIGTERM handler waited for the stop's lock its own thread held")


def test_wait_until_stopped_ends_on_a_sigterm_inside_its_wait() -> None:
    code = "from multiagent._serve import wait_until_stopped\nwait_until_stopped()\nprint('ok')\n"
    done = _run(code, dict(os.environ))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_the_scheduler_ends_on_a_sigterm_inside_its_wait(tmp_path: Path) -> None:
    code = (
        "from multiagent.cli import main\n"
        "sys.argv = ['multiagent', 'persistence', 'scheduler', '--duration', '600', '--json']\n"
        "main()\n"
    )
    done = _run(code, {**os.environ, "MULTIAGENT_HOME": str(tmp_path)})
    assert done.returncode == 0, done.stderr
    assert '"stopped_at"' in done.stdout
