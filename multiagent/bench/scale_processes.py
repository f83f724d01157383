"""``bench scale --processes``: N worker processes share one provider's limit, per strategy.

The simulator runs in its own process with the five-phase schedule of ``bench backpressure``
(baseline; capacity cut to 40%; latency ×4 with 5% server errors; recovery; capacity raised by
half), once advertising its limits in ``x-ratelimit-*`` headers and once not (``_blind``). For
each strategy the schedule restarts (``POST /sim/reset``) as ``processes`` worker processes
(:mod:`multiagent.bench.scale_worker`, real subprocesses) start together, each running
``loops`` agent loops through the real ``ChatOpenAI`` client with the strategy's controller and
the pipeline's retries:

- ``per_process``: each process its own in-process adaptive controller from the profile (what
  N ``multiagent`` processes do without Redis: each paces to the whole limit);
- ``litellm``: LiteLLM's scheme, fixed per-minute counters in Redis at the nominal limit plus a
  cooldown after 429 (:mod:`multiagent.bench.scale_litellm`);
- ``shared_adaptive``: the adaptive controller whose state lives in Redis
  (``multiagent.models.backpressure_redis``); "not available" when that module is missing.

Goodput, 429s, early sends and server errors per phase come from the simulator's counters
(:func:`multiagent.bench.bp_figures.phase_figures`); failed tasks, latency and each process's
share of the successful tasks (fairness) from the workers' records.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from multiagent.bench.backpressure import BackpressureBenchConfig
from multiagent.bench.bp_figures import PhaseFigures, PhaseSpec, TaskRecord, phase_figures
from multiagent.bench.scale_worker import KINDS, REDIS_CONTROLLER_MODULE, WorkerSpec
from multiagent.bench.simproc import sim_call, sim_process
from multiagent.errors import MultiagentError, UsageError

MODES = ("advertised", "blind")
#: The simulator's token limit: high, so requests per second is the capacity that binds.
_SIM_TPM = 100_000_000


@dataclass(frozen=True)
class ScaleProcessesConfig:
    """Shape of the run; the defaults keep the CPU below saturation on two cores."""

    phase_s: float = 15.0
    processes: int = 4
    loops: int = 16
    capacity_rps: float = 20.0
    strategies: tuple[str, ...] = KINDS
    modes: tuple[str, ...] = MODES
    attempts: int = 5
    max_tokens: int = 8
    model: str = "gpt-4o-mini"
    profile: str = "dev_balanced"

    def __post_init__(self) -> None:
        unknown = [s for s in self.strategies if s not in KINDS]
        if unknown or not self.strategies:
            raise UsageError(
                f"unknown strategy {', '.join(unknown) or '(none given)'}; "
                f"valid: {', '.join(KINDS)}"
            )
        bad_modes = [m for m in self.modes if m not in MODES]
        if bad_modes or not self.modes:
            raise UsageError(
                f"unknown mode {', '.join(bad_modes) or '(none given)'}; valid: {', '.join(MODES)}"
            )
        if self.processes < 1 or self.loops < 1:
            raise UsageError(
                f"need processes >= 1 and loops >= 1, got {self.processes}, {self.loops}"
            )
        self.schedule()  # bad phase length or profile fails here, before anything starts

    def schedule(self) -> BackpressureBenchConfig:
        """The backpressure bench's schedule, limits and latency, for all loops together."""
        return BackpressureBenchConfig(
            phase_s=self.phase_s,
            loops=self.processes * self.loops,
            capacity_rps=self.capacity_rps,
            attempts=self.attempts,
            max_tokens=self.max_tokens,
            model=self.model,
            profile=self.profile,
        )

    def runs(self) -> list[tuple[str, str]]:
        """(run name, strategy) in the order they run; blind runs end in ``_blind``."""
        return [
            (kind if mode == "advertised" else f"{kind}_blind", kind)
            for mode in self.modes
            for kind in self.strategies
        ]


@dataclass
class ProcessRun:
    """What one strategy's run recorded (``available`` False: the strategy could not run)."""

    name: str
    kind: str
    available: bool = True
    reason: str = ""
    tasks: list[list[TaskRecord]] = field(default_factory=list)
    series: list[tuple[float, list[dict[str, int]]]] = field(default_factory=list)
    final: list[dict[str, int]] = field(default_factory=list)
    worker_cpu_s: float = 0.0
    machine_busy: float | None = None
    wall_s: float = 0.0


def unavailable_reason(kind: str) -> str:
    """Why ``kind`` cannot run here, or "" when it can."""
    if kind != "shared_adaptive":
        return ""
    try:
        module = importlib.import_module(REDIS_CONTROLLER_MODULE)
    except ImportError:
        return f"not available: {REDIS_CONTROLLER_MODULE} is not in this build"
    if not hasattr(module, "shared_redis_controller"):
        return f"not available: {REDIS_CONTROLLER_MODULE} has no shared_redis_controller"
    return ""


def _cpu_ticks() -> tuple[int, int] | None:
    """(busy, total) jiffies of the whole machine, from /proc/stat (None elsewhere)."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return sum(fields) - idle, sum(fields)


def _counts(stats: dict[str, Any]) -> list[dict[str, int]]:
    return [dict(phase["counts"]) for phase in stats["phases"]]


def _worker_env() -> dict[str, str]:
    """The environment with this package's checkout first on the path: the workers run the
    same code as the bench, wherever it was started from."""
    root = str(Path(__file__).resolve().parents[2])
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": root if not path else root + os.pathsep + path}


def _start_workers(specs: list[WorkerSpec], logs: Path) -> list[tuple[subprocess.Popen[str], Path]]:
    workers = []
    env = _worker_env()
    for spec in specs:
        log = logs / f"worker-{spec.index}.log"
        with log.open("w") as errors:  # the child keeps its own handle
            process = subprocess.Popen(
                [sys.executable, "-m", "multiagent.bench.scale_worker", spec.to_json()],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=errors,
                text=True,
                env=env,
            )
        workers.append((process, log))
    return workers


def _await_ready(workers: list[tuple[subprocess.Popen[str], Path]]) -> None:
    for process, log in workers:
        assert process.stdout is not None
        line = process.stdout.readline()  # "" when the worker died before it was ready
        if line.strip() != "ready":
            process.wait(timeout=10)
            raise MultiagentError(
                f"a bench worker did not start: {log.read_text(errors='replace')[-400:]!r}"
            )


def _stop(workers: list[tuple[subprocess.Popen[str], Path]]) -> None:
    for process, _ in workers:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


def _run_one(
    name: str, kind: str, config: ScaleProcessesConfig, url: str, redis_url: str, total_s: float
) -> ProcessRun:
    run = ProcessRun(name=name, kind=kind)
    key = f"bench-scale-{name}-{uuid.uuid4().hex[:8]}"  # fresh shared state for every run
    specs = [
        WorkerSpec(
            kind=kind, index=i, url=url, redis_url=redis_url, key=key, model=config.model,
            profile=config.profile, loops=config.loops, attempts=config.attempts,
            max_tokens=config.max_tokens, total_s=total_s,
            nominal_rpm=round(config.capacity_rps * 60), nominal_tpm=_SIM_TPM,
        )
        for i in range(config.processes)
    ]  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="multiagent-bench-scale-") as tmp:
        workers = _start_workers(specs, Path(tmp))
        try:
            _await_ready(workers)
            sim_call("POST", url, "/sim/reset")
            start_wall, t0, ticks0 = time.time(), time.monotonic(), _cpu_ticks()
            for process, _ in workers:
                assert process.stdin is not None
                process.stdin.write(f"go {start_wall!r}\n")
                process.stdin.flush()
            while (at := time.monotonic() - t0) < total_s:
                run.series.append((at, _counts(sim_call("GET", url, "/sim/stats"))))
                time.sleep(0.25)
            results = []
            for process, log in workers:
                out, _ = process.communicate(timeout=total_s + 60)
                if process.returncode != 0:
                    raise MultiagentError(
                        f"a bench worker failed: {log.read_text(errors='replace')[-400:]!r}"
                    )
                results.append(json.loads(out.strip().splitlines()[-1]))
        finally:
            _stop(workers)
    run.wall_s = time.monotonic() - t0
    ticks1 = _cpu_ticks()
    if ticks0 and ticks1 and ticks1[1] > ticks0[1]:
        run.machine_busy = (ticks1[0] - ticks0[0]) / (ticks1[1] - ticks0[1])
    time.sleep(0.2)  # let the server notice the aborted requests
    run.final = _counts(sim_call("GET", url, "/sim/stats"))
    for result in sorted(results, key=lambda r: int(r["index"])):
        run.tasks.append(
            [
                TaskRecord(start=s, end=e, ok=bool(ok), error=err)
                for s, e, ok, err in result["tasks"]
            ]
        )
        run.worker_cpu_s += float(result["cpu_s"])
    return run


def run_scale_processes(
    config: ScaleProcessesConfig,
    *,
    redis_url: str,
    progress: Callable[[str], None] | None = None,
) -> tuple[list[PhaseFigures], list[ProcessRun]]:
    """Run every strategy, advertised and blind, against one simulator per mode.

    Args:
        config: Phases, processes, loops, capacity, strategies and modes.
        redis_url: The Redis the shared strategies use (each run under keys of its own).
        progress: Called with a line before each run starts.
    """
    schedule = config.schedule()
    specs = schedule.specs()
    total_s = sum(s.duration_s for s in specs)
    runs: list[ProcessRun] = []
    phases = schedule.phases()
    with (
        sim_process(phases, server_flags=schedule.server_flags()) as advertising,
        sim_process(phases, server_flags=schedule.server_flags(blind=True)) as blind,
    ):
        for name, kind in config.runs():
            reason = unavailable_reason(kind)
            if reason:
                runs.append(ProcessRun(name=name, kind=kind, available=False, reason=reason))
                continue
            if progress is not None:
                progress(
                    f"{name}: {config.processes} processes x {config.loops} loops, "
                    f"{len(specs)} phases x {config.phase_s:g} s"
                )
            url = blind if name.endswith("_blind") else advertising
            runs.append(_run_one(name, kind, config, url, redis_url, total_s))
    figures: list[PhaseFigures] = []
    for run in runs:
        if run.available:
            merged = [t for tasks in run.tasks for t in tasks]
            figures.extend(phase_figures(run.name, specs, run.final, merged, run.series))
    return figures, runs


def process_shares(run: ProcessRun, specs: list[PhaseSpec]) -> list[list[float]]:
    """Per phase, each process's share of the successful tasks started in it."""
    shares = []
    start = 0.0
    for phase in specs:
        end = start + phase.duration_s
        done = [sum(1 for t in tasks if t.ok and start <= t.start < end) for tasks in run.tasks]
        total = sum(done)
        shares.append([n / total if total else 0.0 for n in done])
        start = end
    return shares
