"""Processes opening the PostgreSQL checkpointer of a fresh database at once: LangGraph's
``setup()`` creates and migrates the tables with no lock of its own, and openers collided on
the types it creates (``UniqueViolation``). They take turns now."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OPENERS = 4

#: One opener: waits for a line on stdin (so all start together), opens, prints ``ok``.
_OPEN = """
import sys
from multiagent.persistence.postgres import open_postgres_checkpointer
print("ready", flush=True)
sys.stdin.readline()
with open_postgres_checkpointer(sys.argv[1]) as saver:
    assert saver.get_tuple({"configurable": {"thread_id": "none"}}) is None
print("ok", flush=True)
"""


def test_processes_opening_a_fresh_database_at_once_all_open_it(postgres_url: str) -> None:
    command = [sys.executable, "-c", _OPEN, postgres_url]
    pipes = {"stdin": subprocess.PIPE, "stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
    openers = [subprocess.Popen(command, text=True, cwd=ROOT, **pipes) for _ in range(OPENERS)]
    for opener in openers:
        assert opener.stdout is not None
        assert opener.stdout.readline().strip() == "ready"
    for opener in openers:  # every one told before any is waited for
        assert opener.stdin is not None
        opener.stdin.write("go\n")
        opener.stdin.flush()
    ended = [opener.communicate(timeout=120) for opener in openers]
    assert [(o.returncode, out.split()) for o, (out, _) in zip(openers, ended, strict=True)] == [
        (0, ["ok"])
    ] * OPENERS, "\n".join(err[-600:] for _, err in ended)
