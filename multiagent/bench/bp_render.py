"""The Markdown of ``bench backpressure``: every strategy's phases, then each adaptive strategy's
targets (``adaptive`` with advertised limits, ``adaptive_blind`` without)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from multiagent.bench.bp_figures import (
    ADAPT_ALLOWANCE_S,
    FAILED_TARGET,
    GOODPUT_TARGET,
    SHARE_429_TARGET,
    PhaseFigures,
    beats_others,
    targets_met,
)
from multiagent.bench.report import table, verdict
from multiagent.models.backpressure import BackpressureConfig

CHAMPIONS = ("adaptive", "adaptive_blind")


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _target_rows(figures: Sequence[PhaseFigures], champion: str) -> list[list[str]]:
    mine = [f for f in figures if f.strategy == champion]
    blind = champion.endswith("_blind")
    goodput = (
        f"goodput ≥ 95% of capacity in every phase from {ADAPT_ALLOWANCE_S:g} s after a change"
        if blind
        else "goodput ≥ 95% of capacity in every phase"
    )
    rows = [
        [goodput,
         ", ".join(f"{f.judged_goodput:.1%}" for f in mine),
         verdict(all(f.judged_goodput >= GOODPUT_TARGET for f in mine))],
        ["≤ 2% of attempts answered 429",
         ", ".join(f"{f.share_429:.2%}" for f in mine),
         verdict(all(f.share_429 <= SHARE_429_TARGET for f in mine))],
        ["0 requests sent before a Retry-After expired",
         str(sum(f.early_sends for f in mine)),
         verdict(all(f.early_sends == 0 for f in mine))],
        ["≤ 0.5% of tasks finally failed",
         ", ".join(f"{f.failed_share:.2%}" for f in mine),
         verdict(all(f.failed_share <= FAILED_TARGET for f in mine))],
    ]  # fmt: skip
    if blind:
        # a probe that finds the capacity unchanged is answered by one 429: while it holds, the
        # pace probes at most every 1 / (probe_share x capacity) s (see models/_pace.py)
        share = BackpressureConfig().probe_share
        waits = [1 / (share * f.capacity_rps) for f in mine]
        rows.append(
            [
                f"(reading) longest wait between probes while the capacity holds, so that they "
                f"cost ≤ {share:.0%} of attempts: 1 / ({share:.0%} × capacity)",
                ", ".join(f"{wait:.1f} s" for wait in waits),
                "a raise with no change of round trip is found up to that late",
            ]
        )
        adapt = [f.to_target_s for f in mine]
        rows.append(
            [
                f"goodput at target within {ADAPT_ALLOWANCE_S:g} s of every change",
                ", ".join("never" if a is None else f"{a:.1f} s" for a in adapt),
                verdict(all(a is not None and a <= ADAPT_ALLOWANCE_S for a in adapt)),
            ]
        )
    counts = targets_met(figures)
    total = 4 * len(mine)
    for other, better in beats_others(figures, champion).items():
        rows.append(
            [
                f"better than `{other}` (per-phase targets met)",
                f"{counts[champion]}/{total} vs {counts[other]}/{total}",
                verdict(better),
            ]
        )
    return rows


def render_backpressure(figures: Sequence[PhaseFigures], *, notes: str = "") -> str:
    """The Markdown section for BENCHMARKS.md."""
    rows = [
        [
            f.strategy,
            f.phase,
            f"{f.capacity_rps:g}",
            f"{f.goodput_share:.1%}",
            f"{f.goodput_after_share:.1%}",
            f"{f.share_429:.2%}",
            f.early_sends,
            f"{f.tasks_failed}/{f.tasks}",
            _fmt(f.latency_p50_s, ".2f"),
            _fmt(f.latency_p95_s, ".2f"),
            "never" if f.adapt_s is None else f"{f.adapt_s:.1f}",
            "never" if f.to_target_s is None else f"{f.to_target_s:.1f}",
        ]
        for f in figures
    ]
    headers = [
        "strategy", "phase", "capacity req/s", "goodput / capacity",
        f"goodput after {ADAPT_ALLOWANCE_S:g} s", "429 / attempts", "early sends",
        "tasks failed", "p50 s", "p95 s", "s to adapt", "s to 95%",
    ]  # fmt: skip
    counts = targets_met(figures)
    phases = len({f.phase for f in figures})
    tally = ", ".join(f"`{name}` {met}/{4 * phases}" for name, met in counts.items())
    reasons: dict[str, Counter[str]] = {}
    for f in figures:
        reasons.setdefault(f.strategy, Counter()).update(f.failure_kinds)
    why = "; ".join(
        f"`{name}`: " + (", ".join(f"{kind} ×{n}" for kind, n in kinds.most_common()) or "none")
        for name, kinds in reasons.items()
    )
    text = (
        f"{notes.rstrip()}\n\n"
        + table(headers, rows)
        + f"\n\nPer-phase targets met (goodput, 429s, early sends, failures): {tally}."
        + f" Why tasks failed — {why}."
    )
    for champion in CHAMPIONS:
        if champion in counts:
            text += f"\n\nTargets for `{champion}` (phases in order):\n\n" + table(
                ["target", "measured", "verdict"], _target_rows(figures, champion)
            )
    return text
