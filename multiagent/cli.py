"""The ``multiagent`` command line: thin commands over the library, sub-apps mounted here.

Every failure a user can cause ends the same way: one line on stderr naming the bad value and
what is valid, exit code 2, no traceback. :class:`_OneLineErrors` makes that true for click's
own usage errors as well as for the project's :class:`~multiagent.errors.UsageError`. Ctrl-C
ends with exit code 130 (the workflow commands first mark the run interrupted and print how to
resume it; ``persistence restore`` and ``compact`` say what agent memory holds); ``--version``
prints the installed package's version.
"""

from __future__ import annotations

import os
import sys
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from multiagent._exit import exit_code_of, exit_now
from multiagent.commands._guards import guard_parameters, one_line_error
from multiagent.commands._shared import RootOptions, resolved_home
from multiagent.commands.audit import install_audit
from multiagent.commands.batch import batch_app
from multiagent.commands.bench import bench_app
from multiagent.commands.metrics import metrics_app
from multiagent.commands.metrics import serve as metrics_serve
from multiagent.commands.persistence import persistence_app
from multiagent.commands.profile import profile
from multiagent.commands.sim import sim_app
from multiagent.commands.threads import threads_app
from multiagent.commands.worker import worker
from multiagent.commands.workflows import meeting, run, validate

try:  # recent typer vendors click; its exceptions are not the click package's
    from typer._click import Context as ClickContext
    from typer._click import exceptions as clickx
except ImportError:  # pragma: no cover - older typer
    from click import Context as ClickContext  # type: ignore[assignment]
    from click import exceptions as clickx  # type: ignore[no-redef]


def _one_line(message: str) -> str:
    # whatever a message quotes, it prints as one line of printable text
    text = " ".join(message.split())
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)


def _naming_the_value(exc: clickx.ClickException) -> str:
    """click's message, with the value typer's validation refused: its pydantic error keeps it
    (``Invalid value for '--keep': Input should be greater than or equal to 1`` alone does not
    say what was given)."""
    message = exc.format_message()
    errors = getattr(exc.__cause__, "errors", None)
    if isinstance(exc, clickx.BadParameter) and callable(errors):
        found = errors()
        if found and isinstance(found[0], dict) and "input" in found[0]:
            return f"{message} (got {found[0]['input']!r})"
    return _with_the_valid_names(exc, message)


def _with_the_valid_names(exc: clickx.ClickException, message: str) -> str:
    """click's message for an unknown command or option, with the valid ones: click names
    only close matches (``No such command 'nope'.`` alone says nothing of what there is)."""
    ctx = getattr(exc, "ctx", None)
    if ctx is None:
        return message
    if isinstance(exc, clickx.NoSuchOption):
        valid = [
            opt
            for param in ctx.command.get_params(ctx)
            if not getattr(param, "hidden", False)
            for opt in param.opts
            if opt.startswith("--")
        ]
        return f"{message}; valid: {', '.join(valid)}"
    if isinstance(exc, clickx.UsageError) and message.startswith("No such command"):
        head, _, hint = message.partition(". Did you mean ")
        named = f"{head.rstrip('.')} (did you mean {hint})" if hint else head.rstrip(".")
        return f"{named}; valid: {', '.join(ctx.command.list_commands(ctx))}"
    return message


class _Interrupted(Exception):
    """Ctrl-C inside a command, carried past typer (which turns it into a silent exit 130)."""


class _OneLineErrors(TyperGroup):
    """Run the app with click's standalone handling replaced by one-line errors."""

    def invoke(self, ctx: ClickContext) -> Any:
        # typer catches a KeyboardInterrupt escaping the command and returns 130 with nothing
        # said; a command that says what Ctrl-C left (the workflows, restore, compact) exits
        # with typer.Exit(130) itself, and any other says "interrupted" (see ``main``)
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt as exc:
            raise _Interrupted from exc

    def main(self, *args: Any, **kwargs: Any) -> Any:
        standalone_mode = bool(kwargs.pop("standalone_mode", True))
        guard_parameters(self)  # every value checked before any command body runs
        resolved_home(forget=True)
        try:
            result = super().main(*args, **{**kwargs, "standalone_mode": False})
        except clickx.NoArgsIsHelpError:  # typer has printed the help already
            return self._finish(2, standalone_mode)
        except clickx.ClickException as exc:
            typer.echo(f"error: {_one_line(_naming_the_value(exc))}", err=True)
            return self._finish(exc.exit_code, standalone_mode)
        except typer.Abort as exc:
            # click turns Ctrl-C into Abort; the shell's convention for SIGINT is 128 + 2
            if isinstance(exc.__cause__, KeyboardInterrupt):
                typer.echo("interrupted", err=True)
                return self._finish(130, standalone_mode)
            typer.echo("aborted", err=True)
            return self._finish(1, standalone_mode)
        except (KeyboardInterrupt, _Interrupted):
            typer.echo("interrupted", err=True)
            return self._finish(130, standalone_mode)
        except Exception as exc:  # a known kind becomes one line
            error = one_line_error(exc, home=resolved_home())
            if error is None:
                raise
            typer.echo(f"error: {_one_line(str(error))}", err=True)
            return self._finish(error.exit_code, standalone_mode)
        code = result if isinstance(result, int) else 0
        return self._finish(code, standalone_mode) if standalone_mode else result

    @staticmethod
    def _finish(code: int, standalone_mode: bool) -> int:
        if standalone_mode:
            sys.exit(code)
        return code


app = typer.Typer(
    name="multiagent",
    cls=_OneLineErrors,
    help="Teams of LLM agents as LangGraph state graphs.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def package_version() -> str:
    """The installed ``multiagent`` distribution's version (the package's own if not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("multiagent")
    except PackageNotFoundError:  # pragma: no cover - a source tree without an install
        from multiagent import __version__

        return __version__


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"multiagent {package_version()}")
        raise typer.Exit()


@app.callback()
def _root(
    ctx: typer.Context,
    env: Annotated[
        str | None, typer.Option("--env", help="Profile name (overrides MULTIAGENT_ENV).")
    ] = None,
    policy: Annotated[
        str | None, typer.Option("--policy", help="Cost policy (overrides MULTIAGENT_POLICY).")
    ] = None,
    provider: Annotated[
        str | None,
        typer.Option("--provider", help="sim, openai or local (overrides MULTIAGENT_PROVIDER)."),
    ] = None,
    home: Annotated[
        str | None, typer.Option("--home", help="Data directory (overrides MULTIAGENT_HOME).")
    ] = None,
    config: Annotated[
        str | None, typer.Option("--config", help="A multiagent.toml to use.")
    ] = None,
    _version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_print_version,
            is_eager=True,
            help="Print the version and exit.",
        ),
    ] = False,
) -> None:
    """Teams of LLM agents as LangGraph state graphs: orchestration, meetings, cross-validation."""
    ctx.obj = RootOptions(env=env, policy=policy, provider=provider, home=home, config=config)


app.command("profile")(profile)
app.add_typer(sim_app, name="sim")
app.add_typer(bench_app, name="bench")
app.command("run")(run)
app.command("meeting")(meeting)
app.command("validate")(validate)
app.add_typer(threads_app, name="threads")
app.add_typer(persistence_app, name="persistence")
app.add_typer(metrics_app, name="metrics")
app.command("dashboard", help="The dashboard: the same as `multiagent metrics serve`.")(
    metrics_serve
)
app.command("worker")(worker)
app.add_typer(batch_app, name="batch")
install_audit(app)  # last: audits every command above, mounts `audit`


#: BLAS thread pools the CLI sets to one thread unless the user set them (numpy reads these
#: when it is first imported, which ``import multiagent.cli`` does not do).
BLAS_THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def one_blas_thread() -> None:
    """Run numpy's BLAS on one thread in this process, unless the user chose otherwise.

    The CLI's numpy work is embedding one short text at a time for agent memory: BLAS threads
    gain nothing there, and on a busy machine their spinning and hand-overs cost more CPU than
    the embedding itself (agents embed at once on their own threads, numpy releasing the GIL).
    """
    for name in BLAS_THREAD_VARIABLES:
        os.environ.setdefault(name, "1")


def main() -> None:
    """Console-script entry point: runs the command, then leaves without the interpreter's
    teardown (see :mod:`multiagent._exit`)."""
    one_blas_thread()  # before anything imports numpy
    try:
        app()
    except SystemExit as exc:
        code = exit_code_of(exc)
        if code == 130:
            from multiagent._interrupt import terminated

            # a run that SIGTERM stopped ends as one stopped by Ctrl-C, with SIGTERM's 128 + 15
            code = 143 if terminated() else code
        exit_now(code)
    exit_now(0)
