"""What the shared controller reports (its state across processes) and how it falls back."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from multiagent._metrics import Sample
from multiagent.models._bp_health import gauge_samples
from multiagent.models._bp_redis_decide import Snapshot
from multiagent.models._bp_types import BackpressureConfig, BackpressureState
from multiagent.models._window import OutcomeWindow


@dataclass(frozen=True)
class SharedBackpressureState(BackpressureState):
    """A :class:`BackpressureState` of the limit every process shares, and who holds it.

    ``limit``, ``in_flight``, ``queued`` and the pace are the shared ones (every process);
    error rate and round trips are this process's sample of them.
    """

    processes: int = 1
    in_flight_by_process: dict[str, int] = field(default_factory=dict)
    paused_until_s: float | None = None
    rate_limited: int = 0
    shared: bool = True
    process_id: str = ""


def shared_state(
    snap: Snapshot, *, local: OutcomeWindow, lease_s: float, process_id: str
) -> SharedBackpressureState:
    """The state a snapshot shows (queued: leases booked for a later send)."""
    now = snap.now
    by_process: dict[str, int] = {}
    queued = 0
    for member, deadline in snap.leases:
        owner = member.rpartition("#")[0]
        by_process[owner] = by_process.get(owner, 0) + 1
        queued += deadline > now + lease_s + 1e-3
    error_rate, samples = local.error_rate(now)
    p50, p95 = local.rtt(now, 0.5), local.rtt(now, 0.95)
    remaining = max(0.0, snap.gate - now)
    return SharedBackpressureState(
        limit=max(1, math.floor(snap.num("limit", 1.0))),
        in_flight=len(snap.leases) - queued,
        queued=queued,
        rate_per_s=snap.num("rate"),
        ceiling_per_s=snap.num("ceiling", math.inf),
        wait_multiplier=snap.num("mult", 1.0),
        error_rate=error_rate,
        samples=samples,
        rtt_p50_s=None if math.isnan(p50) else p50,
        rtt_p95_s=None if math.isnan(p95) else p95,
        paused_for_s=remaining,
        time_paused_s=max(0.0, snap.num("paused_total") - remaining),
        advertised_requests_per_s=snap.optional("adv_rps"),
        rate_cuts=int(snap.num("cuts")),
        limit_cuts=int(snap.num("lcuts")),
        processes=max(1, snap.processes),
        in_flight_by_process=by_process,
        paused_until_s=snap.gate if snap.gate > 0 else None,
        rate_limited=int(snap.num("r429")),
        shared=True,
        process_id=process_id,
    )


def fallback_state(
    state: BackpressureState, *, processes: int, rate_limited: int, process_id: str
) -> SharedBackpressureState:
    """The state of a process limiting alone while Redis is away."""
    return SharedBackpressureState(
        **state.as_dict(),
        processes=processes,
        in_flight_by_process={process_id: state.in_flight + state.queued},
        rate_limited=rate_limited,
        shared=False,
        process_id=process_id,
    )


def fallback_config(
    config: BackpressureConfig, *, rate: float, limit: float, processes: int, fraction: float
) -> BackpressureConfig:
    """Bounds for one process alone: ``fraction`` of the last shared limit, split by processes.

    The pace is capped there (``max_requests_per_s``): N processes probing upward on their own
    would together pass what they shared.
    """
    share = fraction / max(1, processes)
    pace = max(1e-3, share * rate)
    slots = max(1, math.floor(share * limit))
    return replace(
        config,
        requests_per_s=pace,
        initial_requests_per_s=None,
        min_requests_per_s=min(config.min_requests_per_s, pace),
        max_requests_per_s=pace,
        max_concurrency=slots,
        min_concurrency=min(config.min_concurrency, slots),
    )


def shared_samples(state: SharedBackpressureState, labels: Mapping[str, str]) -> list[Sample]:
    """Gauges of the shared state: the in-process ones plus processes, slots per process,
    the pause's end (server time), 429s counted by every process and whether Redis is used."""
    base = dict(labels)
    out = gauge_samples(state, labels)
    out.append(("backpressure_processes", base, float(state.processes)))
    out.append(("backpressure_shared", base, 1.0 if state.shared else 0.0))
    out.append(("backpressure_rate_limited", base, float(state.rate_limited)))
    out.append(("backpressure_paused_until_s", base, state.paused_until_s or 0.0))
    for process, held in sorted(state.in_flight_by_process.items()):
        out.append(("backpressure_process_in_flight", {**base, "process": process}, float(held)))
    return out
