"""``bench scale --workers`` report: the CPU ceiling beside the ideal, and what bounds a point."""

from __future__ import annotations

import os

from multiagent.bench.scale_workers import Point, WorkersBench, render_workers


def _point(workers: int, *, rate: float, ceiling: float, over_bound: int = 0) -> Point:
    ideal = min(400.0, workers * 5 / 0.05)
    return Point(
        workers=workers, concurrency=5, items=100, calls=200, seconds=1.0, calls_per_s=rate,
        ideal_per_s=ideal, share=rate / ideal, rate_limited=0, cpu_s=1.0,
        cpu_ms_per_call=5.0, cpu_ceiling_per_s=ceiling, bare_per_s=0.9 * ideal,
        over_bound=over_bound, serving_cpu_ms_per_call=0.75,
    )  # fmt: skip


def test_a_point_whose_ideal_is_above_the_cpu_ceiling_is_reported_as_cpu_bound() -> None:
    bench = WorkersBench(
        items=100,
        concurrency=5,
        points=[_point(1, rate=95.0, ceiling=350.0), _point(4, rate=300.0, ceiling=350.0)],
        kill=None,
    )
    rows = [line for line in render_workers(bench).splitlines() if line.startswith("| ")][1:]
    assert len(rows) == 2
    one, four = (row.split(" | ") for row in rows)
    assert "CPU ceiling calls/s" in render_workers(bench)
    assert one[8:10] == ["5.0", "0.75"]  # the workers' CPU, then the simulator's and Redis's
    assert one[10:12] == ["350", "latency/capacity"]  # ideal 100 < ceiling 350
    assert four[10:12] == ["350", "CPU"]  # ideal 400 > ceiling 350: the machine, not the queue
    assert one[12] == "90 (90%)"
    assert four[12] == "360 (90%)"
    assert one[7] == "met"
    assert four[7] == "**missed**"
    # the closing reading counts the simulator and Redis beside the workers: 2 cores / 5.75 ms
    cores = os.cpu_count() or 1
    assert f"serve at most ≈ {1000 * cores / 5.75:.0f} calls/s" in render_workers(bench)


def test_a_point_past_its_in_flight_bound_misses_the_target_whatever_its_rate() -> None:
    bench = WorkersBench(
        items=100,
        concurrency=5,
        points=[
            _point(1, rate=95.0, ceiling=350.0, over_bound=3),
            _point(2, rate=190.0, ceiling=350.0),
        ],
        kill=None,
    )
    rows = [line for line in render_workers(bench).splitlines() if line.startswith("| ")][1:]
    over, within = (row.strip(" |").split(" | ") for row in rows)
    assert over[7] == "**missed**"
    assert over[-1] == "3"
    assert within[7] == "met"
    assert within[-1] == "0"
    assert bench.as_dict()["target_met"] is False
