"""Writing a benchmark's figures into ``BENCHMARKS.md``, one section per benchmark.

Each benchmark owns the text between ``<!-- bench:NAME:start -->`` and ``<!-- bench:NAME:end -->``;
running it again replaces that section and leaves the rest of the file as it is. The section
starts with the exact command line that produced it and the date.
"""

from __future__ import annotations

import datetime as dt
import platform
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import typer

import multiagent
from multiagent.persistence._files import atomic_write_bytes

_HEADER = (
    "# Benchmarks\n\n"
    "Measured by `multiagent bench ...` on the machine named in each section; each section is "
    'rewritten when its benchmark runs again. Targets are from DESIGN.md ("Numbers").\n'
)


def default_report_path() -> Path:
    """``BENCHMARKS.md`` of the checkout the package runs from, else of the working directory."""
    checkout = Path(multiagent.__file__).resolve().parent.parent / "BENCHMARKS.md"
    if checkout.exists() or (checkout.parent / "pyproject.toml").exists():
        return checkout
    return Path("BENCHMARKS.md")


def command_line(ctx: typer.Context | None = None) -> str:
    """The command that produced the figures: ``multiagent``, the subcommands, and every option
    given a value other than its default (rebuilt from the parsed command when ``ctx`` is
    given, so it reads the same whether typed in a shell or run in a test)."""
    if ctx is None:
        return shlex.join(["multiagent", *sys.argv[1:]])
    parts = ["multiagent"]
    chain: list[Any] = []
    node: Any = ctx
    while node is not None:
        chain.append(node)
        node = node.parent
    for level in reversed(chain):
        if level.parent is not None:
            parts.append(level.info_name or "")
        parts.extend(_given_options(level))
    return shlex.join(parts)


def _given_options(ctx: Any) -> list[str]:
    out: list[str] = []
    for param in ctx.command.params:
        if getattr(param, "param_type_name", "") != "option" or param.name is None:
            continue
        value = ctx.params.get(param.name)
        if value is None or value == param.default or value is False:
            continue
        flag = max(param.opts, key=len)
        if value is True:
            out.append(flag)
        else:
            out.extend([flag, _plain(value)])
    return out


def _plain(value: object) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def machine() -> str:
    """A one-line description of where the figures were measured."""
    import os

    cores = os.cpu_count() or 0
    python = platform.python_version()
    return f"{platform.system()} {platform.machine()}, {cores} cores, Python {python}"


def write_section(path: Path, name: str, *, title: str, command: str, body: str) -> None:
    """Replace (or append) the section of benchmark ``name`` in the report at ``path``.

    Args:
        path: The Markdown file (created with a header when missing).
        name: The benchmark's key (``backpressure``, ``batch``, ``cache``, ``overhead``).
        title: The section's heading.
        command: The exact command line that produced the figures.
        body: Markdown with the figures and their reading.
    """
    start, end = f"<!-- bench:{name}:start -->", f"<!-- bench:{name}:end -->"
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    section = (
        f"{start}\n## {title}\n\n"
        f"Command: `{command}`  \n"
        f"Measured: {when} on {machine()}\n\n"
        f"{body.rstrip()}\n{end}"
    )
    text = path.read_text(encoding="utf-8") if path.exists() else _HEADER
    if start in text and end in text:
        before, rest = text.split(start, 1)
        after = rest.split(end, 1)[1]
        text = before + section + after
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    # a report interrupted mid-write keeps its other sections: the old file or the new, never half
    atomic_write_bytes(path, text.encode("utf-8"))


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def verdict(met: bool) -> str:
    """``met`` / ``**missed**`` for a target."""
    return "met" if met else "**missed**"
