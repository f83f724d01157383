"""``bench startup``: how long ``multiagent run`` takes from the shell, memory on and off.

The CLI runs as it does for a user: a new process per run (``python -m multiagent run TASK
--json``), the simulated provider, a fresh data directory. Three variants, alternated so that
drift in the machine's speed hits all alike:

- **off**: ``--memory off``.
- **on, first run**: ``--memory auto`` on an empty home; the agents remember their answers
  (three texts embedded), nothing to recall.
- **on, recalling**: ``--memory auto`` on a home where one untimed run has left memories; the
  agents recall (three queries embedded, nearest neighbours searched) and remember.

The run's own ``timings.total_s`` (the graph, including the simulated model's latency) splits
each wall time into *run* and *start-up* (interpreter, imports, settings, opening stores,
exit); the process's CPU time (user + system) is reported beside it, being less sensitive than
wall time to other work on the machine. Probes in separate processes show where start-up
goes: the interpreter alone, importing the CLI, the modules a workflow imports, importing
Chroma and opening a new store with it, reading the embedder, one embedding. When
sentence-transformers is installed a last probe loads the same model through it and torch,
which is what every run with memory paid before the embedder moved to numpy.

The package's bytecode is compiled first, as installing it does (``pip`` writes ``.pyc`` files):
where ``PYTHONDONTWRITEBYTECODE`` is set and the package is a source tree, every run would
otherwise compile each of the package's modules again, which no installed copy does.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from multiagent.errors import MultiagentError

TASK = "Plan a product launch for a small bakery"
WALL_TARGET_S = 2.0
VARIANTS: dict[str, str] = {
    "off": "--memory off, fresh home",
    "on_first": "--memory auto, fresh home (remembers, nothing to recall)",
    "on_recall": "--memory auto, home with memories (recalls and remembers)",
}
_TIMEOUT_S = 300.0

# Each probe prints one JSON object of phase → seconds, timed inside the process.
_PROBE_IMPORTS = """
import json, os, time
from pathlib import Path
t0 = time.perf_counter()
import multiagent.cli
t1 = time.perf_counter()
import multiagent.graphs.execute, multiagent.graphs.orchestration, multiagent.sim.model
t2 = time.perf_counter()
from multiagent.persistence.memory import open_chroma_client
# a new store each probe (as a first run with memory opens), in the bench's own data directory
client = open_chroma_client(Path(os.environ["MULTIAGENT_HOME"]) / f"chroma-{os.getpid()}")
t3 = time.perf_counter()
from multiagent.persistence.embeddings import embedder_name, load_embeddings
e = load_embeddings("auto")
getattr(e, "load", lambda: None)()
t4 = time.perf_counter()
e.embed_query(TASK)
t5 = time.perf_counter()
client.close()
print(json.dumps({"cli_import": t1 - t0, "workflow_imports": t2 - t1, "chroma_open": t3 - t2,
                  "embedder_load": t4 - t3, "first_embedding": t5 - t4,
                  "embedder": embedder_name(e)}))
"""
# the same process, left as the CLI leaves it: its wall time against the probe's is the
# interpreter's teardown of a run's modules, which the CLI skips (multiagent._exit)
_PROBE_EXIT_NOW = _PROBE_IMPORTS + "from multiagent._exit import exit_now\nexit_now(0)\n"
_PROBE_REFERENCE = """
import json, time
t0 = time.perf_counter()
from sentence_transformers import SentenceTransformer
from multiagent.persistence.embeddings import minilm_model_path
t1 = time.perf_counter()
model = SentenceTransformer(str(minilm_model_path()), device="cpu", local_files_only=True)
t2 = time.perf_counter()
model.encode([TASK], normalize_embeddings=True, show_progress_bar=False)
t3 = time.perf_counter()
print(json.dumps({"import": t1 - t0, "load": t2 - t1, "first_embedding": t3 - t2}))
"""


def _env(home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "MULTIAGENT_HOME": str(home),
            "MULTIAGENT_PROVIDER": "sim",
            "HF_HUB_OFFLINE": "1",  # the reference probe must not look for the model online
            "TRANSFORMERS_OFFLINE": "1",
        }
    )
    return env


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _run(args: list[str], *, home: Path) -> tuple[float, float, str]:
    """Run ``args`` in a new process; return its wall time, its CPU time and its stdout."""
    cpu = _children_cpu()
    start = time.perf_counter()
    done = subprocess.run(
        args, env=_env(home), capture_output=True, text=True, timeout=_TIMEOUT_S, check=False
    )
    wall = time.perf_counter() - start
    cpu = _children_cpu() - cpu
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise MultiagentError(f"benchmark run {args[1:4]} failed ({done.returncode}): {tail}")
    return wall, cpu, done.stdout


def _cli_run(task: str, *, memory: str, home: Path) -> dict[str, float]:
    args = [sys.executable, "-m", "multiagent", "run", task, "--json", "--memory", memory]
    wall, cpu, out = _run(args, home=home)
    run_s = float(json.loads(out)["timings"]["total_s"])
    return {"wall_s": wall, "run_s": run_s, "startup_s": wall - run_s, "cpu_s": cpu}


def _probe(code: str, *, task: str, home: Path) -> dict[str, Any]:
    wall, _cpu, out = _run([sys.executable, "-c", f"TASK = {task!r}\n{code}"], home=home)
    return {"wall_s": wall, **json.loads(out.strip().splitlines()[-1])}


def _median_dict(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Median of every numeric field; other fields from the first sample."""
    out: dict[str, Any] = {}
    for key, first in samples[0].items():
        if isinstance(first, int | float):
            out[key] = round(statistics.median(s[key] for s in samples), 4)
        else:
            out[key] = first
    return out


def compile_package() -> bool:
    """Compile the package's modules to bytecode where it is missing, as an install does.

    Returns:
        Whether every module has its bytecode (an installed, read-only copy has it already).
    """
    import compileall

    import multiagent

    return bool(compileall.compile_dir(Path(multiagent.__file__).parent, quiet=1))


def reference_installed() -> bool:
    """Whether sentence-transformers (and torch) can load the packaged model for comparison."""
    import importlib.util

    from multiagent.persistence.embeddings import minilm_model_path

    return (
        importlib.util.find_spec("sentence_transformers") is not None
        and minilm_model_path() is not None
    )


def run_startup_bench(
    *,
    repeat: int = 5,
    task: str = TASK,
    reference: bool = True,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Time ``multiagent run`` in new processes, memory on and off, and probe start-up.

    Args:
        repeat: Timed runs of each variant (and of each probe); medians are reported.
        task: The task given to ``multiagent run``.
        reference: Also time the sentence-transformers load of the same model, if installed.
        progress: Receives a line per finished round.

    Returns:
        A JSON-ready document: per-variant medians, probe medians, the target and verdict.
    """
    say = progress or (lambda _line: None)
    compiled = compile_package()
    load_before = os.getloadavg()[0]
    samples: dict[str, list[dict[str, float]]] = {name: [] for name in VARIANTS}
    probes: dict[str, list[dict[str, Any]]] = {"imports": [], "exit_now": [], "interpreter": []}
    with tempfile.TemporaryDirectory(prefix="multiagent-bench-startup-") as tmp:
        root = Path(tmp)
        recall_home = root / "recall"
        _cli_run(task, memory="auto", home=recall_home)  # leaves memories, and warms the disk
        for n in range(repeat):
            samples["off"].append(_cli_run(task, memory="off", home=root / f"off-{n}"))
            samples["on_first"].append(_cli_run(task, memory="auto", home=root / f"first-{n}"))
            samples["on_recall"].append(_cli_run(task, memory="auto", home=recall_home))
            wall, _cpu, _ = _run([sys.executable, "-c", "pass"], home=root / "probe")
            probes["interpreter"].append({"wall_s": wall})
            probes["imports"].append(_probe(_PROBE_IMPORTS, task=task, home=root / "probe"))
            probes["exit_now"].append(_probe(_PROBE_EXIT_NOW, task=task, home=root / "probe"))
            say(
                f"round {n + 1}/{repeat}: "
                + ", ".join(f"{name} {samples[name][-1]['wall_s']:.2f}s" for name in VARIANTS)
            )
        if reference and reference_installed():
            probes["reference"] = [
                _probe(_PROBE_REFERENCE, task=task, home=root / "probe")
                for _ in range(max(1, min(repeat, 3)))
            ]
    variants = {name: {"what": VARIANTS[name], **_median_dict(s)} for name, s in samples.items()}
    worst_on = max(variants["on_first"]["wall_s"], variants["on_recall"]["wall_s"])
    return {
        "task": task,
        "repeat": repeat,
        "python": sys.executable,
        "variants": variants,
        "probes": {name: _median_dict(p) for name, p in probes.items() if p},
        "memory_added_s": round(worst_on - variants["off"]["wall_s"], 4),
        "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "bytecode_compiled": compiled,
        "cores": os.cpu_count(),
        "target_s": WALL_TARGET_S,
        "met": worst_on <= WALL_TARGET_S,
    }
