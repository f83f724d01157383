"""``multiagent audit verify|show``, and the hook that audits every run and administrative command.

:func:`install_audit` wraps the callback of every command that runs or changes something (the
read-only ones, listed in :data:`READ_ONLY`, are left alone) in
:func:`multiagent.commands._shared.audited`, and mounts the ``audit`` sub-app. The run's thread
and correlation ids come from the root run's metadata, read by a LangChain callback handler that
a configure hook adds to every run of an audited command (the ecosystem's own extension point,
so the workflow code is not touched).
"""

from __future__ import annotations

import contextlib
import functools
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any

import typer

from multiagent.commands._shared import audited, cli_settings, console, print_json, print_plain

if TYPE_CHECKING:
    from pathlib import Path

#: Commands that only read: not audited (``audit`` itself included).
READ_ONLY = frozenset(
    {
        "profile",
        "persistence status",
        "threads list",
        "threads show",
        "threads history",
        "metrics show",
        "metrics history",
        "batch status",
        "batch results",
        "sim stats",
    }
)
NOT_AUDITED_GROUPS = ("audit", "bench")
WORKFLOWS = frozenset({"run", "meeting", "validate", "worker"})

audit_app = typer.Typer(
    name="audit",
    help="The hash-chained audit trail of runs and administrative commands.",
    no_args_is_help=True,
)
JsonFlag = Annotated[bool, typer.Option("--json", help="Print one JSON document.")]


@dataclass
class _RunIds:
    """Thread and correlation id of the first root run an audited command starts."""

    thread_id: str | None = None
    correlation_id: str | None = None


_WATCHED: ContextVar[Any] = ContextVar("multiagent_audit_runs", default=None)
_HOOKED: list[bool] = []


def _watch_handler(ids: _RunIds) -> Any:
    """A LangChain handler that notes the root run's ids (built lazily: LangChain is heavy)."""
    from langchain_core.callbacks import BaseCallbackHandler
    from langchain_core.tracers.context import register_configure_hook

    class RunIdsHandler(BaseCallbackHandler):
        def on_chain_start(self, serialized: Any, inputs: Any, **kwargs: Any) -> None:
            metadata = kwargs.get("metadata") or {}
            if kwargs.get("parent_run_id") is None and ids.thread_id is None:
                ids.thread_id = metadata.get("thread_id")
                ids.correlation_id = metadata.get("correlation_id")

    if not _HOOKED:
        register_configure_hook(_WATCHED, inheritable=True)
        _HOOKED.append(True)
    return RunIdsHandler()


@dataclass
class CommandAudit:
    """One command's audit record in the making."""

    settings: Any
    command: str
    options: list[str]
    thread_id: str | None
    started: float
    tokens_before: float
    cost_before: float
    ids: _RunIds = field(default_factory=_RunIds)
    error: str | None = None

    @classmethod
    def begin(cls, ctx: typer.Context, *, command: str, params: Mapping[str, Any]) -> CommandAudit:
        """Note the command, its options and the metrics so far."""
        from multiagent._metrics import get_metrics

        try:
            settings: Any = cli_settings(ctx)
        except Exception:  # bad settings: the command reports them; nothing to audit into
            settings = None
        snap = get_metrics().snapshot()
        thread = params.get("thread")
        return cls(
            settings=settings,
            command=command,
            options=sorted(k for k, v in params.items() if v not in (None, False, (), [])),
            thread_id=thread if isinstance(thread, str) else None,
            started=time.monotonic(),
            tokens_before=snap.total("model_tokens_total"),
            cost_before=snap.total("model_cost_usd_total"),
        )

    @contextlib.contextmanager
    def watch_runs(self) -> Iterator[None]:
        """Note the ids of the first root run (workflow commands only)."""
        if self.command not in WORKFLOWS:
            yield
            return
        token = _WATCHED.set(_watch_handler(self.ids))
        try:
            yield
        finally:
            _WATCHED.reset(token)

    def finish(self, *, exit_code: int) -> bool:
        """Append the record; ``False`` when the trail could not be written."""
        if self.settings is None:
            return True
        from multiagent._metrics import get_metrics
        from multiagent.audit import AuditTrail, audit_dir, current_user, now_iso
        from multiagent.models.redaction import redact_text

        snap = get_metrics().snapshot()
        thread = self.thread_id or self.ids.thread_id
        record = {
            "when": now_iso(),
            "who": current_user(),
            "command": self.command,
            "options": self.options,
            "profile": self.settings.env,
            "policy": self.settings.policy,
            "thread_id": redact_text(thread).text if thread else None,
            "correlation_id": self.ids.correlation_id or uuid.uuid4().hex,
            "tokens": int(snap.total("model_tokens_total") - self.tokens_before),
            "cost_usd": round(snap.total("model_cost_usd_total") - self.cost_before, 8),
            "seconds": round(time.monotonic() - self.started, 3),
            "outcome": "ok" if exit_code == 0 and self.error is None else "failed",
            "exit_code": exit_code,
            "error": self.error,
        }
        try:
            AuditTrail(audit_dir(self.settings)).append(record)
        except Exception:  # the trail must never turn a finished command into a traceback
            return False
        return True


def _current_context() -> Any:
    try:  # recent typer vendors click; its context stack is not the click package's
        from typer._click import globals as click_globals
    except ImportError:  # pragma: no cover - older typer
        import click.globals as click_globals  # type: ignore[no-redef]
    return click_globals.get_current_context()


def _wrap(callback: Callable[..., Any], command: str) -> Callable[..., Any]:
    @functools.wraps(callback)
    def audited_callback(*args: Any, **kwargs: Any) -> Any:
        ctx = _current_context()
        params = {k: v for k, v in kwargs.items() if k != "ctx"}
        with audited(ctx, command=command, params=params):
            return callback(*args, **kwargs)

    return audited_callback


def _command_name(info: Any) -> str:
    callback = info.callback
    return str(info.name or callback.__name__.replace("_", "-"))


def _wrap_commands(app: typer.Typer, prefix: str) -> None:
    for info in app.registered_commands:
        if info.callback is None:
            continue
        command = f"{prefix}{_command_name(info)}"
        if command not in READ_ONLY:
            info.callback = _wrap(info.callback, command)
    for group in app.registered_groups:
        sub = group.typer_instance
        name = group.name or (sub.info.name if sub is not None else None)
        if sub is None or name in NOT_AUDITED_GROUPS:
            continue
        _wrap_commands(sub, f"{prefix}{name} ")


def install_audit(app: typer.Typer) -> None:
    """Audit every run and administrative command of ``app`` and mount ``audit``."""
    _wrap_commands(app, "")
    app.add_typer(audit_app, name="audit")


def _home_trail(ctx: typer.Context) -> Path:
    """The trail's directory; one line (exit 2) when it or one of its files is not what it was."""
    from multiagent.audit import HEAD_FILE, audit_dir, trail_files
    from multiagent.errors import DamagedStoreError

    directory = audit_dir(cli_settings(ctx))
    if directory.exists() and not directory.is_dir():
        raise DamagedStoreError(
            f"the audit trail {directory} is not a directory; move it aside (a new trail starts)"
        )
    for path in [*trail_files(directory), directory / HEAD_FILE]:
        if path.exists() and not path.is_file():
            raise DamagedStoreError(
                f"audit trail file {path} is not a regular file; restore it from a backup of the "
                "data directory, or move the trail aside"
            )
    return directory


@audit_app.command("verify")
def verify(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """Check the hash chain; exit 1 naming the first broken line."""
    from multiagent.audit import verify_trail

    verdict = verify_trail(_home_trail(ctx))
    if as_json:
        print_json(verdict.as_dict())
    elif verdict.ok:
        console.print(f"audit trail intact: {verdict.lines} lines in {verdict.files} files")
        if verdict.torn:  # appends cut off by a crash, kept as they are
            print_plain(
                f"{len(verdict.torn)} torn line{'s' if len(verdict.torn) > 1 else ''} set aside "
                f"(an append cut off by a crash): {', '.join(verdict.torn)}"
            )
    else:
        where = f"{verdict.file} line {verdict.line}" if verdict.line else verdict.file
        typer.echo(f"audit trail broken at {where}: {verdict.problem}", err=True)
    if not verdict.ok:
        raise typer.Exit(code=1)


@audit_app.command("show")
def show(
    ctx: typer.Context,
    last: Annotated[int, typer.Option("--last", min=1, help="How many records.")] = 20,
    as_json: JsonFlag = False,
) -> None:
    """The last records of the trail."""
    import json

    from multiagent.audit import AuditTrail

    records, skipped = [], 0
    for _path, _number, raw in AuditTrail(_home_trail(ctx)).lines():
        try:
            records.append(json.loads(raw))
        except ValueError:
            skipped += 1
    records = records[-last:]
    if skipped:  # not silent: the trail is damaged, and `verify` says where
        typer.echo(
            f"warning: {skipped} lines of the audit trail are not JSON records and are not "
            "shown; run `multiagent audit verify`",
            err=True,
        )
    if as_json:
        print_json({"records": records})
        return
    for r in records:
        console.print(
            f"{r.get('seq')} {r.get('when')} {r.get('who')} {r.get('command')} "
            f"{r.get('outcome')} (exit {r.get('exit_code')}) thread={r.get('thread_id')} "
            f"tokens={r.get('tokens')} cost=${r.get('cost_usd')}",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
