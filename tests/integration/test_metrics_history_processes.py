"""Several processes persisting into one data directory: every count lands exactly once."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

from multiagent._metrics import MetricsStore
from multiagent.observability.history import MetricsHistory, history_path
from multiagent.policies import load_settings

PERSISTS = 25
WRITER = f"""
import sys, time
from pathlib import Path
from multiagent.observability.history import persist_metrics
from multiagent._metrics import get_metrics
from multiagent.policies import load_settings

settings = load_settings()
store = get_metrics()
ready = Path(sys.argv[1])
(ready / sys.argv[2]).touch()
deadline = time.monotonic() + 30
while len(list(ready.iterdir())) < 2 and time.monotonic() < deadline:  # begin together
    time.sleep(0.001)
for i in range({PERSISTS}):
    store.inc("model_calls_total", labels={{"agent": sys.argv[2], "outcome": "ok"}})
    store.inc("model_tokens_total", value=i, labels={{"direction": "input", "model": "m"}})
    persist_metrics(settings)
print("done")
"""


def test_two_processes_writing_the_same_home_count_exactly_once(tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    ready.mkdir()
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(ready), agent],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for agent in ("first", "second")
    ]
    for writer in writers:
        out, err = writer.communicate(timeout=60)
        assert writer.returncode == 0, err
        assert out.strip() == "done"

    settings = load_settings()
    totals = MetricsHistory(settings, store=MetricsStore()).totals(live=False)
    calls = {s.labels["agent"]: s.value for s in totals if s.name.endswith("model_calls_total")}
    assert calls == {"first": PERSISTS, "second": PERSISTS}
    tokens = [s.value for s in totals if s.name.endswith("model_tokens_total")]
    assert tokens == [2 * sum(range(PERSISTS))]
    with closing(sqlite3.connect(history_path(settings))) as conn:
        writes = conn.execute("SELECT pid, COUNT(*) FROM persists GROUP BY pid").fetchall()
        mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
    assert sorted(n for _, n in writes) == [PERSISTS, PERSISTS]
    assert {pid for pid, _ in writes} == {w.pid for w in writers}
    assert mode == "wal"
    points = MetricsHistory(settings, store=MetricsStore()).points(hours=1)
    assert sum(p["calls"] for p in points) == 2 * PERSISTS
