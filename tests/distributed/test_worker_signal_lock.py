"""A SIGTERM that lands while the worker's main thread sets its own stop: the worker still ends.

The worker's handler stops the run by setting the stop event. Run on the main thread between two
of its bytecodes, it took the event's lock while the main thread, interrupted inside ``set``,
held it: the process hung for good, deaf to further SIGTERMs, instead of exiting. The worker here
(``signal_worker.py``) sends itself that SIGTERM at that moment.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.distributed._workers import FAST

pytestmark = [pytest.mark.redis]
WRAPPER = Path(__file__).with_name("signal_worker.py")
#: A bound on the worker's exit; an idle worker needs a second or two of it.
PATIENCE_S = 60.0


def test_a_sigterm_inside_the_workers_own_stop_does_not_hang_it(redis_url: str) -> None:
    command = [
        sys.executable, str(WRAPPER), "worker", "--json", "--queue", "q1", "--concurrency", "1",
        "--idle-exit", "0.5",
    ]  # fmt: skip
    proc = subprocess.Popen(
        command, env={**os.environ, **FAST}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        out, err = proc.communicate(timeout=PATIENCE_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        pytest.fail("the worker hung in its SIGTERM handler, waiting for its own stop's lock")
    assert proc.returncode == 0, err
    assert "finishing the running entries" in err  # the handler ran, inside the stop's set
    assert json.loads(out)["chunks"] == 0
