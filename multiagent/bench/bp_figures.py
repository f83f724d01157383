"""Figures of ``bench backpressure``: per phase and strategy, from the simulator's counters and the
clients' task records (:mod:`multiagent.bench.bp_render` renders them with the targets)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from multiagent.models._window import percentile

GOODPUT_TARGET = 0.95
SHARE_429_TARGET = 0.02
FAILED_TARGET = 0.005
#: Seconds after a capacity change a controller without advertised limits may take to adapt.
ADAPT_ALLOWANCE_S = 3.0
#: Strategies without a controller, that the adaptive ones are compared with.
BASELINES = ("none", "token_bucket")
#: A second of a phase is "adapted" when it delivers this share of capacity with few 429s.
_GOOD_BIN_GOODPUT = 0.90
_GOOD_BIN_429 = 0.05


@dataclass(frozen=True)
class PhaseSpec:
    """One phase as the benchmark scheduled it."""

    name: str
    duration_s: float
    capacity_rps: float


@dataclass(frozen=True)
class TaskRecord:
    """One agent task: when it started and ended (seconds from the run's start), and how."""

    start: float
    end: float
    ok: bool
    error: str | None = None


@dataclass(frozen=True)
class PhaseFigures:
    """What one strategy achieved in one phase."""

    strategy: str
    phase: str
    capacity_rps: float
    successes: int
    goodput_share: float
    goodput_after_share: float
    attempts: int
    rate_limited: int
    share_429: float
    early_sends: int
    server_errors: int
    tasks: int
    tasks_failed: int
    failed_share: float
    latency_p50_s: float | None
    latency_p95_s: float | None
    adapt_s: float | None
    to_target_s: float | None
    failure_kinds: dict[str, int] = field(default_factory=dict)

    @property
    def judged_goodput(self) -> float:
        """The goodput a target judges: from the adaptation allowance on for a blind strategy
        (it cannot know of a change before it sees it), the whole phase otherwise."""
        return self.goodput_after_share if self.strategy.endswith("_blind") else self.goodput_share

    @property
    def targets_met(self) -> bool:
        """Every per-phase target (goodput, 429s, early sends, failures) is met."""
        return (
            self.judged_goodput >= GOODPUT_TARGET
            and self.share_429 <= SHARE_429_TARGET
            and self.early_sends == 0
            and self.failed_share <= FAILED_TARGET
        )

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready figures."""
        return {**asdict(self), "targets_met": self.targets_met}


def adapt_seconds(
    series: Sequence[tuple[float, list[dict[str, int]]]],
    index: int,
    phase: PhaseSpec,
    start: float,
    *,
    window_s: float = 2.0,
    step_s: float = 0.5,
) -> float | None:
    """Seconds from the phase's start to the first moment from which every 2-s window (slid by
    0.5 s) is good: it admits ≥ 90% of capacity per second, and ≤ 5% of its attempts are
    answered 429.

    ``series`` holds (seconds since the run started, per-phase counters) polled from the
    simulator about four times a second; a window's rates are measured between the polls
    nearest its edges, over the time those polls span within the phase. Admitted (attempts
    less 429s and 5xx) counts on arrival, unlike successes, which count when a reply ends.
    ``None`` when the phase's last window is still bad (it never adapted).
    """
    steps = int((phase.duration_s - window_s) // step_s) + 1
    if steps <= 0:
        return None
    end = start + phase.duration_s
    good = []
    for k in range(steps):
        first = _poll_at(series, index, start + k * step_s)
        last = _poll_at(series, index, start + k * step_s + window_s)
        if first is None or last is None:
            good.append(False)
            continue
        # the nearest polls may fall just outside the phase, where it admits nothing
        seconds = min(last[0], end) - max(first[0], start)
        attempts = last[3] - first[3]
        if seconds <= 0 or attempts <= 0:
            good.append(False)
            continue
        share_429 = (last[2] - first[2]) / attempts
        rate = (last[1] - first[1]) / seconds
        good.append(rate >= _GOOD_BIN_GOODPUT * phase.capacity_rps and share_429 <= _GOOD_BIN_429)
    if not good[-1]:
        return None
    first_good = steps - 1
    while first_good > 0 and good[first_good - 1]:
        first_good -= 1
    return first_good * step_s


def _poll_at(
    series: Sequence[tuple[float, list[dict[str, int]]]], index: int, moment: float
) -> tuple[float, int, int, int] | None:
    """The poll nearest ``moment``: its time, and phase ``index``'s admitted requests, 429s
    and attempts."""
    if not series:
        return None
    at, phases = min(series, key=lambda item: abs(item[0] - moment))
    c = phases[index]
    admitted = c["attempts"] - c["rate_limited"] - c["server_errors"]
    return at, admitted, c["rate_limited"], c["attempts"]


def seconds_to_target(
    series: Sequence[tuple[float, list[dict[str, int]]]],
    index: int,
    phase: PhaseSpec,
    start: float,
    successes: int,
    *,
    step_s: float = 0.5,
) -> float | None:
    """Seconds into the phase from which goodput stays at target: the first moment ``t`` such
    that, counted from ``t`` or from any later moment (every ``step_s``, up to
    ``ADAPT_ALLOWANCE_S`` before the end), successes to the phase's end reach 95% of capacity.

    The time a change takes to be met, as the target reads ("≥ 95% of capacity within 3 s of a
    change"); a controller that probes keeps meeting it, unlike :func:`adapt_seconds`, which
    asks every 2-s window to be good. ``None`` when even the last moment misses.
    """
    end = start + phase.duration_s
    steps = int((phase.duration_s - ADAPT_ALLOWANCE_S) // step_s) + 1
    if steps <= 0 or not series:
        return None
    good = []
    for k in range(steps):
        at, phases = min(series, key=lambda item: abs(item[0] - (start + k * step_s)))
        seconds = end - max(at, start)
        done = successes - phases[index]["successes"]
        good.append(seconds > 0 and done >= GOODPUT_TARGET * phase.capacity_rps * seconds)
    if not good[-1]:
        return None
    first = steps - 1
    while first > 0 and good[first - 1]:
        first -= 1
    return first * step_s


def _goodput_after(
    series: Sequence[tuple[float, list[dict[str, int]]]],
    index: int,
    phase: PhaseSpec,
    start: float,
    counts: dict[str, int],
) -> float:
    """Successes from ``ADAPT_ALLOWANCE_S`` into the phase to its end, per capacity-second.

    The successes at the allowance's end are read from the poll nearest it (polls come about
    four times a second); the seconds counted run from that poll to the phase's end.
    """
    seconds = phase.duration_s - ADAPT_ALLOWANCE_S
    if seconds <= 0 or not series:
        return 0.0
    at, phases = min(series, key=lambda item: abs(item[0] - (start + ADAPT_ALLOWANCE_S)))
    seconds = start + phase.duration_s - max(at, start)
    if seconds <= 0:
        return 0.0
    return (counts["successes"] - phases[index]["successes"]) / (phase.capacity_rps * seconds)


def phase_figures(
    strategy: str,
    phases: Sequence[PhaseSpec],
    final: list[dict[str, int]],
    tasks: Sequence[TaskRecord],
    series: Sequence[tuple[float, list[dict[str, int]]]],
) -> list[PhaseFigures]:
    """Per-phase figures of one strategy's run."""
    figures = []
    start = 0.0
    for index, phase in enumerate(phases):
        end = start + phase.duration_s
        counts = final[index]
        mine = [t for t in tasks if start <= t.start < end]
        done = [t.end - t.start for t in mine if t.ok]
        failed = sum(1 for t in mine if not t.ok)
        attempts = counts["attempts"]
        figures.append(
            PhaseFigures(
                strategy=strategy,
                phase=phase.name,
                capacity_rps=phase.capacity_rps,
                successes=counts["successes"],
                goodput_share=counts["successes"] / (phase.capacity_rps * phase.duration_s),
                goodput_after_share=_goodput_after(series, index, phase, start, counts),
                attempts=attempts,
                rate_limited=counts["rate_limited"],
                share_429=counts["rate_limited"] / attempts if attempts else 0.0,
                early_sends=counts["early"],
                server_errors=counts["server_errors"],
                tasks=len(mine),
                tasks_failed=failed,
                failed_share=failed / len(mine) if mine else 0.0,
                latency_p50_s=percentile(done, 0.5) if done else None,
                latency_p95_s=percentile(done, 0.95) if done else None,
                adapt_s=adapt_seconds(series, index, phase, start),
                to_target_s=seconds_to_target(series, index, phase, start, counts["successes"]),
                failure_kinds=dict(
                    Counter((t.error or "?").split(":", 1)[0] for t in mine if not t.ok)
                ),
            )
        )
        start = end
    return figures


def targets_met(figures: Sequence[PhaseFigures]) -> dict[str, int]:
    """Per strategy, how many of the per-phase targets it met (4 targets × each phase)."""
    counts: dict[str, int] = {}
    for f in figures:
        met = (
            (f.judged_goodput >= GOODPUT_TARGET)
            + (f.share_429 <= SHARE_429_TARGET)
            + (f.early_sends == 0)
            + (f.failed_share <= FAILED_TARGET)
        )
        counts[f.strategy] = counts.get(f.strategy, 0) + int(met)
    return counts


def beats_others(figures: Sequence[PhaseFigures], champion: str) -> dict[str, bool]:
    """Whether ``champion`` meets more of the per-phase targets than each baseline strategy
    (``none``, ``token_bucket``): goodput alone can be bought with 429s and failed tasks."""
    counts = targets_met(figures)
    if champion not in counts:
        return {}
    return {name: counts[champion] > met for name, met in counts.items() if name in BASELINES}
