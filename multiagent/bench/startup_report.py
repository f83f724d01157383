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
        "*start-up* the rest of the wall time; *CPU* is the process's user + system time. "
        + (
            "The package's bytecode was compiled first, as an install does."
            if result.get("bytecode_compiled")
            else "The package's bytecode could not all be compiled first: its modules may have "
            "been compiled again in every run."
        ),
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
                        "import Chroma and open a new store (memory on only)",
                        _ms(imports["chroma_open"]),
                    ),
                    (f"read the embedder ({imports['embedder']})", _ms(imports["embedder_load"])),
                    ("first embedding of the task", _ms(imports["first_embedding"])),
                    *(
                        [
                            (
                                "interpreter teardown of those modules at exit (skipped by "
                                "the CLI, which leaves with `os._exit` once threads, `atexit` "
                                "handlers and output are done)",
                                _ms(imports["wall_s"] - probes["exit_now"]["wall_s"]),
                            )
                        ]
                        if "exit_now" in probes
                        else []
                    ),
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
    lines += ["", _reading(result)]
    return "\n".join(lines)


def _reading(result: dict[str, Any]) -> str:
    """What the figures say, in words, from the figures themselves."""
    variants, probes = result["variants"], result["probes"]
    worst = max(variants["on_first"]["wall_s"], variants["on_recall"]["wall_s"])
    load = result.get("load_average", [0.0, 0.0])
    parts = [
        f"Reading: with memory on a run takes {_s(worst)} s against "
        f"{_s(variants['off']['wall_s'])} s with `--memory off`; the target "
        f"{'is met' if result['met'] else 'is missed'}. The machine's load average was "
        f"{load[0]:.1f} when the benchmark started and {load[1]:.1f} when it ended "
        f"({result.get('cores', '?')} cores): other work on it stretches every figure.",
    ]
    if "imports" in probes:
        imports = probes["imports"]
        parts.append(
            f"Memory costs a run importing Chroma and opening its store "
            f"({_ms(imports['chroma_open'])} ms), reading "
            f"the model ({_ms(imports['embedder_load'])} ms) and an embedding per recall and "
            "per remember; the CLI opens Chroma and reads the model on a background thread, "
            "at once when the store has something to recall, else at the first remember, "
            "while the other agents' calls are out, so only what the models' latency does "
            "not cover reaches the wall time (imports hold the GIL: starting them beside the "
            "CLI's own imports gains nothing)."
        )
    if "reference" in probes:
        ref = probes["reference"]
        parts.append(
            "Before, every run with memory imported sentence-transformers and torch and "
            f"loaded the model through them: {_ms(ref['import'] + ref['load'])} ms in the "
            "probe, which is what the numpy embedder removed."
        )
    return " ".join(parts)
