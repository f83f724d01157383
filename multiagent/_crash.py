"""Named crash points: where the crash-safety tests kill a process, deterministically."""

from __future__ import annotations

import os
from pathlib import Path

from multiagent._interrupt import wait_or_stop

#: Names a crash point (see :func:`crash_point`); tests set it in a subprocess they will kill.
CRASH_POINT_ENV = "MULTIAGENT_CRASH_POINT"
#: The file :func:`crash_point` creates when the process reaches the point.
CRASH_MARKER_ENV = "MULTIAGENT_CRASH_POINT_FILE"
#: A file whose appearance lets the parked process go on: a pause, for the race tests that place
#: another process's step between two of this one's.
CRASH_GO_ENV = "MULTIAGENT_CRASH_POINT_GO"


def crash_point(name: str) -> None:
    """Park the process at a named critical point when ``MULTIAGENT_CRASH_POINT`` names it.

    The crash-safety tests run a command in a subprocess with the variable set, wait for the
    marker file (``MULTIAGENT_CRASH_POINT_FILE``) to appear, then ``SIGKILL`` it: the kill lands
    mid-write every time, with no timing guess. Parked, it still answers Ctrl-C as the command
    would there (:func:`~multiagent._interrupt.wait_or_stop`), so a test can interrupt it at the
    same point. With ``MULTIAGENT_CRASH_POINT_GO`` naming a file, it goes on once that file
    exists: the test has done what it places here. Unset (always, outside those tests), it
    costs one dictionary lookup.
    """
    if os.environ.get(CRASH_POINT_ENV) != name:
        return
    marker = os.environ.get(CRASH_MARKER_ENV)
    if marker:
        Path(marker).write_text(str(os.getpid()), encoding="utf-8")
    go = os.environ.get(CRASH_GO_ENV)
    while not (go and Path(go).exists()):  # the test's SIGKILL, its go file, or Ctrl-C
        wait_or_stop(0.05 if go else 60)
