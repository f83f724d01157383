"""A short process's counts reach the history through the periodic reader's last export."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from multiagent._metrics import MetricsStore
from multiagent.observability.history import MetricsHistory
from multiagent.policies import load_settings

CHILD = """
import sys
from multiagent._metrics import get_metrics
from multiagent.observability.history import install_history_sink
from multiagent.policies import load_settings

install_history_sink(load_settings(home=sys.argv[1]))
get_metrics().inc("model_calls_total", value=7, labels={"model": "m", "outcome": "ok"})
get_metrics().observe("model_latency_seconds", value=0.2, labels={"model": "m"})
# no explicit persist: the provider's shutdown at exit exports once more
"""


def test_counts_are_persisted_at_exit_without_an_explicit_write(tmp_path: Path) -> None:
    home = tmp_path / "home"
    subprocess.run([sys.executable, "-c", CHILD, str(home)], check=True, timeout=120)
    history = MetricsHistory(load_settings(home=home), store=MetricsStore())
    totals = {(s.name, tuple(sorted(s.labels.items()))): s.value for s in history.totals()}
    assert totals[("multiagent_model_calls_total", (("model", "m"), ("outcome", "ok")))] == 7
    assert totals[("multiagent_model_latency_seconds_count", (("model", "m"),))] == 1
    point = history.points(hours=1)[-1]
    assert point["calls"] == 7
    assert 0.1 < point["latency_p50_s"] <= 0.25


def test_the_periodic_export_persists_while_the_process_lives(tmp_path: Path) -> None:
    home = tmp_path / "home"
    code = (
        "import os; os.environ['MULTIAGENT_METRICS_EXPORT_S'] = '0.3'\n"
        + CHILD
        + "import time; time.sleep(3)\nos._exit(0)  # no exit handlers: only the periodic export\n"
    )
    subprocess.run([sys.executable, "-c", code, str(home)], check=True, timeout=120)
    history = MetricsHistory(load_settings(home=home), store=MetricsStore())
    assert history.points(hours=1)[-1]["calls"] == 7
