"""The SQLite project budget's holds are leases renewed while their process lives: a long call
keeps its hold, a SIGKILLed process's hold stops counting within one lease (real processes)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from multiagent.errors import BudgetExceededError
from multiagent.models.budget import BUDGET_FILE, SQLiteProjectBudget

PROC = str(Path(__file__).parents[1] / "distributed" / "_budget_proc.py")
#: Short enough for a test, long enough for a keeper on a busy machine (renewed every 1 s).
LEASE_S = 3.0


def test_a_live_process_keeps_its_hold_and_a_killed_ones_stops_counting(tmp_path: Path) -> None:
    path, cap = tmp_path / BUDGET_FILE, 1.0
    spec = {"store": "sqlite", "path": str(path), "cap": cap, "usd": 0.9, "lease_s": LEASE_S}
    proc = subprocess.Popen(
        [sys.executable, PROC, json.dumps(spec)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    store = SQLiteProjectBudget(path, daily_usd=cap, lease_s=LEASE_S)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "held", proc.stderr
        # the child's call lasts four leases: each try is held back, its 0.9 still held (and
        # one that spend alone cannot fit is refused)
        deadline = time.monotonic() + 4 * LEASE_S
        while True:
            assert store.try_reserve(0.5) is None
            with pytest.raises(BudgetExceededError, match=r"\$0\.900000 held"):
                store.try_reserve(1.5)
            if time.monotonic() > deadline:
                break
            time.sleep(0.25)
        assert store.report()["held_usd"] == 0.9
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
    # the dead process renews nothing: its hold stops counting once its lease ends
    deadline = time.monotonic() + 120  # only stops a test that would hang
    while (held := store.try_reserve(0.5)) is None:
        assert time.monotonic() < deadline, "the killed process's hold was never dropped"
        time.sleep(0.1)
    store.settle(held, 0.5)
    assert store.report() | {"period": ""} == {
        "period": "", "daily_usd": cap, "spent_usd": 0.5, "held_usd": 0.0
    }  # fmt: skip
