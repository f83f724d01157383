"""Figures and Markdown of ``bench scale --processes``: per strategy and phase, with fairness
between processes and the shared adaptive controller's targets against both baselines."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from multiagent.bench.bp_figures import (
    GOODPUT_TARGET,
    SHARE_429_TARGET,
    PhaseFigures,
    PhaseSpec,
)
from multiagent.bench.report import table, verdict
from multiagent.bench.scale_processes import ProcessRun, ScaleProcessesConfig, process_shares

#: No process may get less than this share of the goodput.
FAIR_SHARE_TARGET = 0.20
CHAMPION = "shared_adaptive"
BASELINE_KINDS = ("per_process", "litellm")


def _suffix(name: str) -> str:
    return "_blind" if name.endswith("_blind") else ""


def phase_score(f: PhaseFigures, min_share: float) -> tuple[int, float]:
    """(targets met of the five, judged goodput): a phase is won by more targets met, then by
    goodput (goodput alone can be bought with 429s and failed tasks)."""
    met = (
        (f.judged_goodput >= GOODPUT_TARGET)
        + (f.share_429 <= SHARE_429_TARGET)
        + (f.early_sends == 0)
        + (f.tasks_failed == 0)
        + (min_share >= FAIR_SHARE_TARGET)
    )
    return int(met), f.judged_goodput


def fairness(runs: Sequence[ProcessRun], specs: list[PhaseSpec]) -> dict[str, list[list[float]]]:
    """Per run name, per phase, each process's share of the successful tasks."""
    return {run.name: process_shares(run, specs) for run in runs if run.available}


def _min(shares: list[float]) -> float:
    return min(shares) if shares else 0.0


def _target_rows(
    figures: Sequence[PhaseFigures], shares: dict[str, list[list[float]]], champion: str
) -> list[list[str]]:
    mine = [f for f in figures if f.strategy == champion]
    fair = [_min(s) for s in shares[champion]]
    rows = [
        ["goodput ≥ 95% of capacity in every phase" + (" (from 3 s)" if _suffix(champion) else ""),
         ", ".join(f"{f.judged_goodput:.1%}" for f in mine),
         verdict(all(f.judged_goodput >= GOODPUT_TARGET for f in mine))],
        ["≤ 2% of attempts answered 429", ", ".join(f"{f.share_429:.2%}" for f in mine),
         verdict(all(f.share_429 <= SHARE_429_TARGET for f in mine))],
        ["0 early sends across processes", str(sum(f.early_sends for f in mine)),
         verdict(all(f.early_sends == 0 for f in mine))],
        ["0 failed tasks", str(sum(f.tasks_failed for f in mine)),
         verdict(all(f.tasks_failed == 0 for f in mine))],
        ["no process below 20% of the goodput", ", ".join(f"{s:.0%}" for s in fair),
         verdict(all(s >= FAIR_SHARE_TARGET for s in fair))],
    ]  # fmt: skip
    for kind in BASELINE_KINDS:
        other = kind + _suffix(champion)
        if other not in shares:
            continue
        theirs = {f.phase: f for f in figures if f.strategy == other}
        wins = [
            phase_score(f, fair[i]) > phase_score(theirs[f.phase], _min(shares[other][i]))
            for i, f in enumerate(mine)
        ]
        rows.append(
            [f"ahead of `{other}` on every phase (targets met, then goodput)",
             f"{sum(wins)}/{len(wins)} phases", verdict(all(wins))]
        )  # fmt: skip
    return rows


def render_processes(
    figures: Sequence[PhaseFigures],
    runs: Sequence[ProcessRun],
    config: ScaleProcessesConfig,
    *,
    notes: str = "",
) -> str:
    """The Markdown section for BENCHMARKS.md."""
    specs = config.schedule().specs()
    shares = fairness(runs, specs)
    rows = []
    for f in figures:
        index = [s.name for s in specs].index(f.phase)
        mine = shares[f.strategy][index]
        rows.append(
            [f.strategy, f.phase, f"{f.capacity_rps:g}", f"{f.goodput_share:.1%}",
             f"{f.goodput_after_share:.1%}", f"{f.share_429:.2%}", f.early_sends,
             f"{f.tasks_failed}/{f.tasks}",
             "-" if f.latency_p95_s is None else f"{f.latency_p95_s:.2f}",
             " / ".join(f"{s:.0%}" for s in mine)]
        )  # fmt: skip
    headers = [
        "strategy", "phase", "capacity req/s", "goodput / capacity", "goodput after 3 s",
        "429 / attempts", "early sends", "tasks failed", "p95 task s", "share per process",
    ]  # fmt: skip
    text = f"{notes.rstrip()}\n\n" + table(headers, rows)
    cpu = [
        f"`{r.name}` workers {r.worker_cpu_s:.1f} CPU-s in {r.wall_s:.0f} s"
        + ("" if r.machine_busy is None else f", machine {r.machine_busy:.0%} busy")
        for r in runs
        if r.available
    ]
    if cpu:
        text += "\n\nCPU while each run ran (2 cores, shared with other work): " + "; ".join(cpu)
    missing = [r for r in runs if not r.available]
    for run in missing:
        text += f"\n\n`{run.name}`: {run.reason}."
    for champion in (CHAMPION, CHAMPION + "_blind"):
        if champion in shares:
            text += f"\n\nTargets for `{champion}` (phases in order):\n\n" + table(
                ["target", "measured", "verdict"], _target_rows(figures, shares, champion)
            )
    return text


def processes_document(
    figures: Sequence[PhaseFigures], runs: Sequence[ProcessRun], config: ScaleProcessesConfig
) -> dict[str, Any]:
    """The JSON document of a run."""
    shares = fairness(runs, config.schedule().specs())
    return {
        "config": {
            "phase_s": config.phase_s,
            "processes": config.processes,
            "loops": config.loops,
            "capacity_rps": config.capacity_rps,
            "strategies": list(config.strategies),
            "modes": list(config.modes),
            "profile": config.profile,
        },
        "phases": [f.as_dict() for f in figures],
        "runs": [
            {
                "name": r.name,
                "kind": r.kind,
                "available": r.available,
                "reason": r.reason,
                "tasks_per_process": [len(t) for t in r.tasks],
                "successful_tasks_per_process": [sum(t.ok for t in ts) for ts in r.tasks],
                "shares": shares.get(r.name, []),
                "worker_cpu_s": r.worker_cpu_s,
                "machine_busy": r.machine_busy,
            }
            for r in runs
        ],
    }


def describe(config: ScaleProcessesConfig) -> str:
    """How the run was set up, for the report."""
    specs = config.schedule().specs()
    schedule = "; ".join(f"{s.name} {s.capacity_rps:g} req/s" for s in specs)
    rate = config.schedule().rate_limit()
    return (
        f"One simulator (own process, loopback HTTP) per mode: {config.phase_s:g} s per phase — "
        f"{schedule}; `latency_x4_errors` also fails 5% of requests with 500/503. "
        f"{config.processes} worker processes × {config.loops} agent loops, started together "
        f"for each strategy; each loop calls `ChatOpenAI` (max_retries=0, "
        f"max_tokens={config.max_tokens}) through the strategy's controller with the "
        f"pipeline's retries ({config.attempts} attempts, full jitter, Retry-After as floor). "
        f"`per_process`: each process its own adaptive controller from the `{config.profile}` "
        f"profile ({rate.requests_per_minute / 60:g} req/s to start); `litellm`: LiteLLM's "
        f"per-minute counters in Redis at the nominal {config.capacity_rps * 60:g} req/min, "
        "5-s cooldown after a 429 (see `multiagent/bench/scale_litellm.py` for what is "
        "reproduced); `shared_adaptive`: the adaptive controller shared through Redis. Runs "
        "ending in `_blind` meet a simulator that sends no `x-ratelimit-*` headers. Goodput, "
        "429s and early sends from the simulator's counters; failed tasks, p95 latency (task "
        "start to answer, waits and retries included) and each process's share of the "
        "successful tasks from the workers, by the phase a task started in. The capacities "
        "are low enough that the CPU is not what limits (see the CPU line below the table)."
    )
