"""What every command shares: the consoles, JSON output, settings from the root options, and
the audit record each command leaves."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from multiagent.errors import MultiagentError
from multiagent.policies import Settings, load_settings

#: The ``--json`` flag of every reporting command.
JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON document.")]

console = Console()
err_console = Console(stderr=True)
# the data directory of the settings a command resolved last: a failure after that (a damaged
# database) is reported naming the file in it (see commands._guards)
_resolved_homes: list[Path] = []


@dataclass(frozen=True)
class RootOptions:
    """Options given before the command name (``multiagent --env prod_quality run ...``)."""

    env: str | None = None
    policy: str | None = None
    provider: str | None = None
    home: str | None = None
    config: str | None = None


def cli_settings(
    ctx: typer.Context,
    *,
    env: str | None = None,
    policy: str | None = None,
    check_stores: bool = True,
) -> Settings:
    """Resolve settings from the root options; a command's own ``--env``/``--policy`` win.

    With ``check_stores`` a database in the data directory that is visibly damaged stops the
    command here, in one line naming it, before anything is written.
    """
    root = ctx.find_root().obj
    options = root if isinstance(root, RootOptions) else RootOptions()
    settings = load_settings(
        env=options.env if env is None else env,  # ``--env ""`` is refused, not the default
        policy=options.policy if policy is None else policy,
        provider=options.provider,
        home=options.home,
        config_file=options.config,
    )
    _resolved_homes[:] = [settings.home]
    if check_stores:
        from multiagent.persistence.health import refuse_damaged

        refuse_damaged(settings.home)
    return settings


def resolved_home(*, forget: bool = False) -> Path | None:
    """The data directory of the settings this command resolved (``None``: none yet).

    Args:
        forget: Forget it (a new command starts), returning what it was.
    """
    home = _resolved_homes[0] if _resolved_homes else None
    if forget:
        _resolved_homes.clear()
    return home


def print_plain(text: str) -> None:
    """Print a line of data as it is: paths, names and texts may hold ``[...]``, which is not
    markup, and a path is never broken across lines."""
    console.print(text, markup=False, highlight=False, soft_wrap=True)


def print_json(document: Any) -> None:
    """Print exactly one JSON document on stdout."""
    sys.stdout.write(json.dumps(document, indent=2, default=str, ensure_ascii=False) + "\n")
    sys.stdout.flush()


@contextmanager
def stops_on_ctrl_c(*, stopped: str, at_once: str) -> Iterator[None]:
    """Run the block under :func:`~multiagent._interrupt.stop_on_ctrl_c`; Ctrl-C ends the
    command with exit code 130 and one line on stderr saying what is stored.

    Args:
        stopped: The line when the library stopped at a point it checks (the first Ctrl-C).
        at_once: The line when a second Ctrl-C cut in wherever the command was.
    """
    from multiagent._interrupt import StopRequested, stop_on_ctrl_c

    try:
        with stop_on_ctrl_c():
            yield
    except StopRequested:
        line = stopped
    except KeyboardInterrupt:
        line = at_once
    else:
        return
    err_console.print(line, markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(130)  # the shell's convention for SIGINT: 128 + 2


#: ``ctx.meta`` key of a command that leaves no audit record (see :func:`leave_no_audit_record`).
_NO_AUDIT_RECORD = "multiagent.no_audit_record"


def leave_no_audit_record(ctx: typer.Context) -> None:
    """Write no audit record when this command ends, and so warn of none missing.

    For a command that only reads a home it may not write (a read-only sidecar), once it has
    said so itself: the append would fail, and a warning at exit would call that a failure.
    """
    ctx.meta[_NO_AUDIT_RECORD] = True


@contextmanager
def audited(ctx: typer.Context, *, command: str, params: Mapping[str, Any]) -> Iterator[None]:
    """Append one audit record when the command in the ``with`` block finishes.

    The record is written whatever the ending (exit code, error, Ctrl-C), except for bad input
    (exit code 2), which by contract changes nothing stored, and for a command that called
    :func:`leave_no_audit_record`. A trail that cannot be written is reported on stderr when
    the command itself succeeded.
    """
    from multiagent.commands.audit import CommandAudit

    audit = CommandAudit.begin(ctx, command=command, params=params)
    code = 1
    try:
        with audit.watch_runs():
            yield
        code = 0
    except typer.Exit as exc:
        code = exc.exit_code
        if code == 130:  # a command that said what Ctrl-C left, then exited as for SIGINT
            audit.error = "KeyboardInterrupt"
        raise
    except MultiagentError as exc:
        code = exc.exit_code
        audit.error = type(exc).__name__
        raise
    except KeyboardInterrupt:
        code, audit.error = 130, "KeyboardInterrupt"
        raise
    except BaseException as exc:
        audit.error = type(exc).__name__
        raise
    finally:
        wanted = code != 2 and not ctx.meta.get(_NO_AUDIT_RECORD)
        if wanted and not audit.finish(exit_code=code) and code == 0:
            err_console.print("warning: the audit trail could not be written", markup=False)
