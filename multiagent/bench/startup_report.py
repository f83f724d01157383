"""``bench startup`` figures as the body of their ``BENCHMARKS.md`` section."""

from __future__ import annotations

from typing import Any

from multiagent.bench.report import table, verdict


def _s(value: float) -> str:
    return f"{value:.2f}"


def _ms(value: float) -> str:
    return f"{value * 1000:.0f}"


def startup_markdown(result: dict[str, Any]) -> str:
    """The figures as the body of the ``BENCHMARKS.md`` section."""
    variants = result["variants"]
    rows = [
        (
            name,
            data["what"],
            _s(data["wall_s"]),
            _s(data["run_s"]),
            _s(data["startup_s"]),
            _s(data["cpu_s"]),
        )
        for name, data in variants.items()
    ]
    worst = max(variants["on_first"]["wall_s"], variants["on_recall"]["wall_s"])
    lines = [
        f"`multiagent run {result['task']!r} --json` in a new process per run, simulated "
        f"provider, {result['repeat']} runs of each variant, alternated; medians. *run* is the "
        "graph's own time (`timings.total_s`, the simulated model's latency included), "
        "*start-up* the rest of the wall time; *CPU* is the process's user + system time.",
        "",
        table(("variant", "what", "wall s", "run s", "start-up s", "CPU s"), rows),
        "",
        table(
            ("figure", "measured", "target", "verdict"),
            [
                (
                    "wall, memory on (the slower of the two)",
                    f"{_s(worst)} s",
                    f"≤ {_s(result['target_s'])} s",
                    verdict(result["met"]),
                ),
                ("memory on − memory off", f"{_s(result['memory_added_s'])} s", "-", "-"),
            ],
        ),
    ]
    probes = result["probes"]
    if "imports" in probes:
        imports = probes["imports"]
        lines += [
            "",
            "Where start-up goes (probes in new processes, timed inside them; medians):",
            "",
            table(
                ("part", "ms"),
                [
                    (
                        "interpreter start and exit (`python -c pass`)",
                        _ms(probes["interpreter"]["wall_s"]),
                    ),
                    ("import the CLI", _ms(imports["cli_import"])),
                    (
                        "import what a workflow run needs (graphs, nodes, models)",
                        _ms(imports["workflow_imports"]),
                    ),
                    (
                        "import Chroma and the memory store (memory on only)",
                        _ms(imports["chroma_import"]),
                    ),
                    (f"read the embedder ({imports['embedder']})", _ms(imports["embedder_load"])),
                    ("first embedding of the task", _ms(imports["first_embedding"])),
                ],
            ),
        ]
    if "reference" in probes:
        ref = probes["reference"]
        lines += [
            "",
            "The same model through sentence-transformers and torch, as every run with memory "
            "loaded it before (probe, medians):",
            "",
            table(
                ("part", "ms"),
                [
                    ("import sentence-transformers (torch, transformers)", _ms(ref["import"])),
                    ("load the model", _ms(ref["load"])),
                    ("first embedding of the task", _ms(ref["first_embedding"])),
                ],
            ),
        ]
    return "\n".join(lines)
