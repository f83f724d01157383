"""The options ``run``, ``meeting`` and ``validate`` share, and the checks of the ones that cannot
go together: each refusal is one line naming the option to leave out."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from multiagent.errors import UsageError

ThreadOption = Annotated[
    str | None,
    typer.Option(
        "--thread",
        help="Thread id: names a new run, or the one to resume (1-128 of A-Z a-z 0-9 . _ -, "
        "starting with a letter or digit).",
    ),
]
ResumeOption = Annotated[
    bool,
    typer.Option(
        "--resume", help="Continue --thread from its last checkpoint; nothing done reruns."
    ),
]
BudgetOption = Annotated[
    float | None,
    typer.Option("--budget", help="USD the thread may spend (default: the profile's budget_usd)."),
]
AgentsFileOption = Annotated[
    Path | None,
    typer.Option("--agents-file", help="agents.toml to use (default: the one in MULTIAGENT_HOME)."),
]
NoStreamOption = Annotated[
    bool, typer.Option("--no-stream", help="Print only the result, not progress and tokens.")
]
QuietAgentsOption = Annotated[
    bool,
    typer.Option(
        "--quiet-agents",
        help="Hide each agent's streamed tokens; progress, costs and the final answer still show.",
    ),
]
ModelOption = Annotated[
    str | None,
    typer.Option(
        "--model",
        help="provider:name every agent calls (sim:, openai:, or any init_chat_model provider "
        "installed, e.g. ollama:llama3); priced by [prices] in multiagent.toml.",
    ),
]
RevealOption = Annotated[
    bool,
    typer.Option(
        "--reveal-pii",
        help="With a profile that redacts: input values become numbered placeholders "
        "(<EMAIL_1>) held in memory only, and the final output shows your values again; "
        "everything stored keeps the placeholders. No effect when redaction is off.",
    ),
]
MEMORY_CHOICES = ("auto", "minilm", "lexical", "off")
MemoryOption = Annotated[
    str,
    typer.Option(
        "--memory",
        help="Agent memory: auto (MiniLM when installed, else lexical), minilm, lexical, off.",
    ),
]


def refuse_on_resume(ctx: typer.Context, resume: bool, *names: str) -> None:
    """Options that shape a new run mean nothing to a resumed thread, which keeps what it
    started with: refused, as a task that differs from the thread's is, never ignored."""
    if not resume:
        return
    for name in names:
        source = ctx.get_parameter_source(name)
        if source is not None and source.name != "DEFAULT":  # given, not left to its default
            option = "--" + name.replace("_", "-")
            raise UsageError(
                f"{option} cannot be used with --resume: a resumed thread keeps what it "
                f"started with; leave {option} out"
            )


def no_reveal_option(reveal_pii: bool, option: str) -> None:
    """``--reveal-pii`` restores one run's output in this terminal; a batch or queue has none."""
    if reveal_pii:
        raise UsageError(f"--reveal-pii cannot be used with {option}; leave --reveal-pii out")


def no_model_option(model: str | None, option: str) -> None:
    """``--model`` is for runs in this process; batches and queued runs use the profile's."""
    if model is not None:
        raise UsageError(f"--model {model} cannot be used with {option}; leave --model out")
