"""``multiagent bench startup``: the CLI timed in new processes, memory on and off.

Figures are not asserted (speed lives in the benchmark, not in tests); what it reports and
writes is.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from multiagent.bench.startup import VARIANTS
from multiagent.bench.startup_report import startup_markdown
from multiagent.cli import app


def _result(*, on_wall: float) -> dict[str, object]:
    variant = {"wall_s": on_wall, "run_s": 0.7, "startup_s": on_wall - 0.7, "cpu_s": 1.5}
    return {
        "task": "t",
        "repeat": 3,
        "variants": {
            name: {"what": what, **variant, **({"wall_s": 1.5} if name == "off" else {})}
            for name, what in VARIANTS.items()
        },
        "probes": {
            "interpreter": {"wall_s": 0.02},
            "imports": {
                "cli_import": 0.2,
                "workflow_imports": 0.7,
                "chroma_open": 0.3,
                "embedder_load": 0.05,
                "first_embedding": 0.02,
                "embedder": "all-MiniLM-L6-v2",
            },
        },
        "memory_added_s": on_wall - 1.5,
        "load_average": [0.5, 0.7],
        "cores": 2,
        "target_s": 2.0,
        "met": on_wall <= 2.0,
    }


def test_the_section_says_what_was_measured_and_the_verdict() -> None:
    met = startup_markdown(_result(on_wall=1.9))
    assert "| wall, memory on (the slower of the two) | 1.90 s | ≤ 2.00 s | met |" in met
    assert "| import Chroma and open a new store (memory on only) | 300 |" in met
    assert "read the embedder (all-MiniLM-L6-v2)" in met
    assert "sentence-transformers" not in met  # no reference probe, no reference table
    missed = startup_markdown(_result(on_wall=2.4))
    assert "| 2.40 s | ≤ 2.00 s | **missed** |" in missed
    assert "the target is missed" in missed


@pytest.mark.slow
def test_bench_startup_runs_the_cli_and_writes_its_section(tmp_path: Path) -> None:
    report = tmp_path / "BENCHMARKS.md"
    report.write_text(
        "# Benchmarks\n\n<!-- bench:cache:start -->\nkept\n<!-- bench:cache:end -->\n"
    )
    done = CliRunner().invoke(
        app,
        ["bench", "startup", "--repeat", "1", "--no-reference", "--report", str(report), "--json"],
    )
    assert done.exit_code == 0, done.output
    result = json.loads(done.stdout)
    assert set(result["variants"]) == set(VARIANTS)
    for figures in result["variants"].values():
        assert figures["wall_s"] > figures["run_s"] > 0  # start-up is never free
        assert figures["cpu_s"] > 0
    assert "reference" not in result["probes"]
    assert result["report"] == str(report)
    text = report.read_text()
    assert "kept" in text  # other sections stay
    assert "<!-- bench:startup:start -->" in text
    assert "Command: `multiagent bench startup --repeat 1 --no-reference --report" in text


def test_the_section_says_whether_the_bytecode_was_compiled_first() -> None:
    compiled = startup_markdown({**_result(on_wall=1.9), "bytecode_compiled": True})
    assert "The package's bytecode was compiled first, as an install does." in compiled
    missing = startup_markdown({**_result(on_wall=1.9), "bytecode_compiled": False})
    assert "may have been compiled again in every run" in missing
