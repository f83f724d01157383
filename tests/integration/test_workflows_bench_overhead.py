"""``bench overhead`` runs both graphs, on the same calls, and reports through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from multiagent.bench.overhead import VARIANTS, _rotated, run_overhead_bench
from multiagent.cli import app


def test_overhead_bench_measures_every_variant_on_the_same_calls() -> None:
    result = run_overhead_bench(iterations=5, warmup=1)
    assert result["calls_per_run"] == 5
    assert result["same_output"] is True  # bare and full made the same calls
    assert set(result["variants"]) == set(VARIANTS)
    for data in result["variants"].values():
        assert data["median_ms"] > 0
    assert result["ratio"] == round(
        result["variants"]["full"]["median_ms"] / result["variants"]["bare"]["median_ms"], 3
    )
    assert result["met"] == (result["ratio"] <= 1.10)
    assert result["ratio_cpu"] == round(
        result["variants"]["full"]["cpu_median_ms"] / result["variants"]["bare"]["cpu_median_ms"],
        3,
    )


def test_every_variant_takes_every_place_in_the_order() -> None:
    names = list(VARIANTS)
    orders = [_rotated(names, index) for index in range(len(names))]
    for order in orders:
        assert sorted(order) == sorted(names)
    for place in range(len(names)):
        assert {order[place] for order in orders} == set(names)


def test_bench_overhead_command_writes_its_section(tmp_path: Path) -> None:
    report = tmp_path / "BENCH.md"
    result = CliRunner().invoke(
        app,
        [
            "bench",
            "overhead",
            "--iterations",
            "5",
            "--warmup",
            "0",
            "--report",
            str(report),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["report"] == str(report)
    text = report.read_text(encoding="utf-8")
    assert "<!-- bench:overhead:start -->" in text
    assert "full / bare" in text
    assert "Where the time goes" in text
