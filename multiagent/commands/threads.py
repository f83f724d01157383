"""``multiagent threads list|show|history``: the runs kept in the checkpointer, and time travel."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.markup import escape
from rich.table import Table

from multiagent.commands._shared import JsonOption, cli_settings, console, print_json, print_plain
from multiagent.errors import UsageError

if TYPE_CHECKING:  # imported where used, so `--help` stays fast
    from multiagent.policies import Settings

T = TypeVar("T")

threads_app = typer.Typer(
    help="Threads: every run kept in the checkpointer; show any checkpoint (time travel).",
    no_args_is_help=True,
)

ThreadArgument = Annotated[str, typer.Argument(help="The thread id (see `threads list`).")]


def _with_saver(settings: Settings, action: Callable[[Any], T], *, empty: T | None = None) -> T:
    """Run ``action`` with the checkpointer; never create a database just to read from it."""
    from multiagent.persistence.checkpointer import checkpoint_path, open_checkpointer

    if not settings.checkpoint_url and not checkpoint_path(settings).exists():
        if empty is not None:
            return empty
        raise UsageError("there are no threads yet; start one with `multiagent run TASK`")
    with open_checkpointer(settings) as saver:
        return action(saver)


def _not_a_batch(settings: Settings, thread: str) -> None:
    """Refuse a local batch's id in one line that says where it is: batches are kept apart from
    the checkpointer's threads (it read "unknown thread", or "no threads yet")."""
    from multiagent.commands._batch_run import is_local_batch

    if is_local_batch(settings, thread):
        raise UsageError(
            f"{thread!r} is a local batch (validate --batch), not a thread: "
            f"`multiagent validate --thread {thread} --resume` prints its results (and finishes "
            "it if it stopped)"
        )


@threads_app.command("list")
def list_command(
    ctx: typer.Context,
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="Show at most N.")] = None,
    as_json: JsonOption = False,
) -> None:
    """List threads, most recent first, with status and cost."""
    from multiagent.graphs.threads import list_threads

    settings = cli_settings(ctx)
    rows: list[dict[str, Any]] = _with_saver(
        settings, lambda saver: list_threads(saver, limit=limit), empty=[]
    )
    _mark_running(settings, rows)
    if as_json:
        print_json({"threads": rows})
        return
    if not rows:
        console.print("no threads yet; start one with `multiagent run TASK`")
        return
    cells = [
        (
            row["thread_id"],
            row["workflow"],
            row["status"],
            str(row["updated_at"] or "")[:16].replace("T", " "),
            f"{row['checkpoints']} ckpt",
            f"${row['cost_usd']:.6f}",
        )
        for row in rows
    ]
    widths = [max(len(cell[i]) for cell in cells) for i in range(len(cells[0]))]
    for row, cell in zip(rows, cells, strict=True):
        line = "  ".join(value.ljust(width) for value, width in zip(cell, widths, strict=True))
        console.print(f"{line}  {row['subject']}", markup=False, highlight=False, soft_wrap=True)


def _mark_running(settings: Settings, rows: list[dict[str, Any]]) -> None:
    """Show a thread that another process runs now as ``running``: its latest checkpoint alone
    looks stopped mid-way (``interrupted``), which invites a resume beside the live run."""
    from multiagent.observability.live_starts import running_threads

    running = running_threads(settings)
    for row in rows:
        if row["thread_id"] in running:
            row["status"] = "running"


def _short(value: Any) -> str:
    if isinstance(value, list):
        return f"{len(value)} entries"
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    text = " ".join(text.split())
    return text if len(text) <= 100 else text[:99] + "…"


@threads_app.command("show")
def show_command(
    ctx: typer.Context,
    thread: ThreadArgument,
    checkpoint: Annotated[
        str | None, typer.Option("--checkpoint", help="Show the state at this checkpoint.")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Show a thread's state: now, or at any of its checkpoints (`threads history`)."""
    from multiagent.graphs.threads import thread_state

    settings = cli_settings(ctx)
    _not_a_batch(settings, thread)
    state = _with_saver(settings, lambda s: thread_state(s, thread, checkpoint_id=checkpoint))
    if checkpoint is None:  # an earlier checkpoint's status is its own
        _mark_running(settings, [state])
    if as_json:
        print_json(state)
        return
    console.print(
        f"[bold]{state['thread_id']}[/] · {state['workflow']} · {state['status']} · step "
        f"{state['step']} · checkpoint {state['checkpoint_id']} · {state['created_at']}",
        highlight=False,
        soft_wrap=True,
    )
    if state["next"]:
        console.print(f"next: {', '.join(state['next'])}", highlight=False)
    for error in state["errors"]:  # what state holds is text, never markup
        console.print(f"[red]error:[/] {escape(str(error))}", highlight=False)
    table = Table(show_header=True)
    table.add_column("key", style="bold")
    table.add_column("value")
    for key, value in state["values"].items():
        table.add_row(escape(key), escape(_short(value)))
    console.print(table)


@threads_app.command("history")
def history_command(
    ctx: typer.Context, thread: ThreadArgument, as_json: JsonOption = False
) -> None:
    """List a thread's checkpoints, newest first; `threads show --checkpoint ID` shows one."""
    from multiagent.graphs.threads import thread_history

    settings = cli_settings(ctx)
    _not_a_batch(settings, thread)
    rows = _with_saver(settings, lambda saver: thread_history(saver, thread))
    if as_json:
        print_json({"thread_id": thread, "checkpoints": rows})
        return
    # plain aligned lines, as `threads list`: a table would cut the ids `--checkpoint` needs
    print_plain(f"Checkpoints of {thread} ({len(rows)})")
    cells = [("checkpoint", "step", "source", "created", "next", "sizes")] + [
        (
            str(row["checkpoint_id"]),
            str(row["step"]),
            str(row["source"]),
            str(row["created_at"] or "")[:19].replace("T", " "),
            ", ".join(row["next"]) or "-",
            ", ".join(f"{k} {v}" for k, v in row["counts"].items()),
        )
        for row in rows
    ]
    widths = [max(len(cell[i]) for cell in cells) for i in range(len(cells[0]) - 1)]
    for cell in cells:
        padded = [value.ljust(width) for value, width in zip(cell, widths, strict=False)]
        print_plain("  ".join([*padded, cell[-1]]))
