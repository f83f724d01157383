"""A process is known alive by its pid and, where a record says when its process last wrote,
by starting before that: a pid reused by a later process is not the record's process."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from multiagent.persistence.scheduler_state import pid_alive, process_start


def test_a_process_start_is_read_and_precedes_now() -> None:
    started = process_start(os.getpid())
    assert started is not None
    assert started <= time.time()
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                             stdin=subprocess.PIPE)  # fmt: skip
    try:
        child_started = process_start(child.pid)
        assert child_started is not None
        assert started <= child_started  # started after this process, read as such
    finally:
        child.communicate(b"")


def test_a_pid_taken_by_a_later_process_is_not_the_records() -> None:
    pid, started = os.getpid(), process_start(os.getpid())
    assert started is not None
    assert pid_alive(pid)
    assert pid_alive(pid, since=time.time())  # a record this process wrote
    assert not pid_alive(pid, since=started - 60)  # written a minute before this process began


def test_a_pid_that_is_gone_is_not_alive() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert not pid_alive(child.pid, since=time.time())
