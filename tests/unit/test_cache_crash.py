"""Counts survive a killed process: every lookup that returned is counted on disk, exactly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from langchain_core.load import dumps
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.outputs import ChatGeneration

from multiagent.models.analysis_cache import AnalysisCache
from multiagent.models.completion_cache import CompletionCache

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")

_STORED = 3
_THREADS, _ROUNDS = 4, 25

# Lookups from several threads (one connection shared by them), then a line on stdout and a
# wait for the kill: nothing after the last counted lookup can flush a buffer.
_CHILD = textwrap.dedent(
    f"""
    import sys, threading
    from pathlib import Path
    from langchain_core.load import dumps
    from langchain_core.messages import HumanMessage
    from multiagent.models.analysis_cache import AnalysisCache
    from multiagent.models.completion_cache import CompletionCache

    completions = CompletionCache(Path(sys.argv[1]))
    analyses = AnalysisCache(Path(sys.argv[2]), ttl_s=3600)

    def work(worker):
        for i in range({_ROUNDS}):
            stored = dumps([HumanMessage(f"stored {{i % {_STORED}}}")])
            absent = dumps([HumanMessage(f"absent {{worker}} {{i}}")])
            assert completions.lookup(stored, "m") is not None
            assert completions.lookup(absent, "m") is None
            analyses.get_or_compute("verdict", f"content {{i % {_STORED}}}", lambda: "ok")

    threads = [threading.Thread(target=work, args=(n,)) for n in range({_THREADS})]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    print("counted", flush=True)
    sys.stdin.read()
    """
)


def test_counts_are_exact_after_sigkill(tmp_path: Path) -> None:
    completion_dir, analysis_dir = tmp_path / "completions", tmp_path / "analysis"
    seed = CompletionCache(completion_dir)
    for i in range(_STORED):
        message = AIMessage(content=f"answer {i}")
        seed.update(dumps([HumanMessage(f"stored {i}")]), "m", [ChatGeneration(message=message)])
    seed.close()
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(completion_dir), str(analysis_dir)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert child.stdout is not None
    line = child.stdout.readline()
    if line.strip() != "counted":
        child.kill()
        pytest.fail(f"the child did not finish its lookups: {child.communicate()[1]}")
    os.kill(child.pid, signal.SIGKILL)
    child.communicate()
    assert child.returncode == -signal.SIGKILL

    lookups = _THREADS * _ROUNDS
    stats = CompletionCache(completion_dir).stats()
    assert (stats.hits, stats.misses, stats.entries) == (lookups, lookups, _STORED)
    verdicts = AnalysisCache(analysis_dir, ttl_s=3600).stats()["kinds"]["verdict"]
    # every thread may miss a content before another thread stores it; the sum is exact
    assert verdicts["hits"] + verdicts["misses"] == lookups
    assert _STORED <= verdicts["misses"] <= _STORED * _THREADS
    assert verdicts["expired"] == 0
