"""``multiagent persistence ...``: status, snapshots, restore, pruning, maintenance, scheduler,
key rotation."""

from __future__ import annotations

import functools
import importlib
import json
import signal
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, cast

import typer
from rich.markup import escape
from rich.table import Table

from multiagent.commands._shared import (
    cli_settings,
    console,
    print_json,
    print_plain,
    stops_on_ctrl_c,
)
from multiagent.commands.repair import repair
from multiagent.errors import UsageError
from multiagent.persistence.scheduler_state import TASK_NAMES

if TYPE_CHECKING:  # the commands import what they run when they run: `--help` stays fast
    from multiagent.persistence.maintenance import MaintenanceReport
    from multiagent.persistence.scheduler import Task
    from multiagent.policies import Settings

persistence_app = typer.Typer(
    name="persistence",
    help="Agent memory snapshots, checkpoint pruning, Chroma maintenance and their scheduler.",
    no_args_is_help=True,
)
persistence_app.command("repair")(repair)

JsonFlag = Annotated[bool, typer.Option("--json", help="Print one JSON document.")]
TimezoneOption = Annotated[
    str | None, typer.Option("--timezone", help="IANA time zone of the schedule (default UTC).")
]


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def _print_maintenance(report: MaintenanceReport) -> None:
    console.print(
        f"[bold]{report.operation}[/bold]: {_size(report.size_before)} -> "
        f"{_size(report.size_after)} in {report.seconds:.3f}s"
    )
    for key, value in report.details.items():
        print_plain(f"  {key}: {value}")


@persistence_app.command("status")
def status(ctx: typer.Context, timezone: TimezoneOption = None, as_json: JsonFlag = False) -> None:
    """Snapshots per agent, scheduled runs, database sizes and checkpoint counts."""
    from multiagent.persistence.status import persistence_status

    report = persistence_status(cli_settings(ctx), timezone=timezone)
    if as_json:
        print_json(report)
        return
    memory, checkpoints = report["memory"], report["checkpoints"]
    console.print(f"[bold]home[/bold] {escape(report['home'])}", soft_wrap=True)
    print_plain(
        f"memory: {len(memory['agents'])} agents, {_size(memory['size_bytes'])} ({memory['path']})"
    )
    print_plain(
        f"checkpoints ({checkpoints['backend']}): {checkpoints['threads']} threads, "
        f"{checkpoints['checkpoints']} checkpoints, {_size(checkpoints['size_bytes'])}"
    )
    backups = report["backups"]
    console.print(f"backups: {backups['count']} ({_size(backups['total_bytes'])})")
    table = Table(title="snapshots", title_justify="left")
    for column in ("agent", "items now", "snapshots", "size", "latest"):
        table.add_column(column)
    agents = sorted(set(memory["agents"]) | set(report["snapshots"]["agents"]))
    for agent in agents:
        snap = report["snapshots"]["agents"].get(agent, {"count": 0, "total_bytes": 0})
        table.add_row(
            escape(agent),
            str(memory["agents"].get(agent, 0)),
            str(snap["count"]),
            _size(snap["total_bytes"]),
            str(snap.get("latest", "-")),
        )
    console.print(table)
    schedule = report["schedule"]
    table = Table(
        title=f"schedule ({schedule['timezone']}, running: {schedule['running']})",
        title_justify="left",
    )
    for column in ("task", "last run", "status", "next run", "last error"):
        table.add_column(column)
    for name, task in schedule["tasks"].items():
        table.add_row(
            name,
            str(task["last_run"] or "-"),
            str(task["last_status"] or "-"),
            str(task["next_run"] or "-"),
            escape(str(task["last_error"] or "-")),
        )
    console.print(table)
    for name in memory["staging"]:  # the next command that opens agent memory settles it
        print_plain(f"interrupted rebuild of agent memory: collection {name}")
    for bad in report["snapshots"]["unreadable"]:  # on disk, counted by retention, unusable
        print_plain(f"unreadable: {bad['error']}")
    for left in report["leftovers"]:  # a killed snapshot or backup: `persistence repair` clears
        print_plain(f"left by an interrupted write: {left['path']} ({_size(left['size_bytes'])})")


@persistence_app.command("snapshot")
def snapshot(
    ctx: typer.Context,
    agent: Annotated[
        str | None, typer.Option("--agent", help="One agent (default: every agent).")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Snapshot agent memory to <home>/snapshots (old ones beyond the profile's limit go)."""
    from multiagent.persistence.checkpointer import ensure_home
    from multiagent.persistence.snapshots import MemorySnapshot
    from multiagent.persistence.status import memory_report

    settings = cli_settings(ctx)
    known = memory_report(settings)["agents"]  # read-only: opening Chroma rewrites its files
    if agent is not None and agent not in known:
        names = ", ".join(known) or "none"
        raise UsageError(f"agent {agent!r} has no memory to snapshot; agents: {names}")
    ensure_home(settings)
    with MemorySnapshot(settings) as snapper:
        taken = [snapper.take(agent)] if agent is not None else snapper.take_all()
    if as_json:
        print_json({"snapshots": [info.as_dict() for info in taken]})
        return
    if not taken:
        console.print("no agent has a memory yet; nothing to snapshot")
    for info in taken:
        print_plain(
            f"{info.agent}: {info.item_count} items -> {info.path} ({_size(info.size_bytes)})"
        )


@persistence_app.command("restore")
def restore(
    ctx: typer.Context,
    snapshot_file: Annotated[str, typer.Argument(help="A .json.gz memory snapshot.")],
    as_json: JsonFlag = False,
) -> None:
    """Replace an agent's memory by exactly what a snapshot holds (verified first)."""
    from multiagent.persistence.snapshots import MemorySnapshot

    settings = cli_settings(ctx)
    # Ctrl-C stops before the swap, which is the only step that changes memory
    with (
        stops_on_ctrl_c(
            stopped="interrupted: nothing was restored; agent memory is as it was before",
            at_once="interrupted at once: the agent's memory, once next opened, holds what it "
            "held before or exactly the snapshot, never a mix",
        ),
        MemorySnapshot(settings) as snapper,
    ):
        info = snapper.restore(Path(snapshot_file))
    if as_json:
        print_json({"restored": info.as_dict()})
        return
    print_plain(f"restored {info.item_count} items of {info.agent} from {info.path}")


@persistence_app.command("prune")
def prune(
    ctx: typer.Context,
    keep: Annotated[
        int | None, typer.Option("--keep", min=1, help="Checkpoints kept per thread.")
    ] = None,
    max_age_days: Annotated[
        float | None, typer.Option("--max-age-days", min=0.0, help="Drop older threads.")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Keep the last N checkpoints per thread, drop old threads, VACUUM; report bytes.

    A thread another live process is running now is skipped (and named).
    """
    from multiagent.observability.live_starts import runs_held
    from multiagent.persistence.checkpointer import ensure_home
    from multiagent.persistence.pruning import prune_checkpoints

    settings = cli_settings(ctx)
    ensure_home(settings)
    report = prune_checkpoints(
        settings,
        keep=keep,
        max_age_days=max_age_days,
        running=functools.partial(runs_held, settings),
    )
    if as_json:
        print_json(report.as_dict())
        return
    console.print(
        f"[bold]prune[/bold] ({report.backend}): {report.checkpoints_before} -> "
        f"{report.checkpoints_after} checkpoints, {report.threads_before} -> "
        f"{report.threads_after} threads, {_size(report.bytes_reclaimed)} reclaimed "
        f"in {report.seconds:.3f}s"
    )
    if report.kept_for_interrupts:
        print_plain(f"  kept (waiting on an interrupt): {', '.join(report.kept_for_interrupts)}")
    for thread, reason in report.skipped.items():
        print_plain(f"  skipped {thread}: {reason}")


@persistence_app.command("backup")
def backup(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """Copy the Chroma store to <home>/backups (the newest N are kept)."""
    from multiagent.persistence.maintenance import ChromaDBMaintenance

    report = ChromaDBMaintenance(cli_settings(ctx)).backup()
    if as_json:
        print_json(report.as_dict())
    else:
        _print_maintenance(report)


@persistence_app.command("vacuum")
def vacuum(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """VACUUM the Chroma database and the checkpoint database."""
    from multiagent.persistence.maintenance import ChromaDBMaintenance
    from multiagent.persistence.pruning import vacuum_checkpoints

    settings = cli_settings(ctx)
    chroma = ChromaDBMaintenance(settings).vacuum()
    checkpoints = vacuum_checkpoints(settings)
    if as_json:
        print_json({"chroma": chroma.as_dict(), "checkpoints": checkpoints})
        return
    _print_maintenance(chroma)
    console.print(
        f"[bold]checkpoints[/bold] ({checkpoints['backend']}): "
        f"{_size(checkpoints['size_before'])} -> {_size(checkpoints['size_after'])}"
    )


@persistence_app.command("compact")
def compact(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """Rebuild agent collections, drop orphaned index files, vacuum."""
    from multiagent.persistence.maintenance import ChromaDBMaintenance

    maintenance = ChromaDBMaintenance(cli_settings(ctx))
    # Ctrl-C stops between collections or before a swap; each rebuild keeps every item
    with stops_on_ctrl_c(
        stopped="interrupted: compaction stopped part-way; agent memory holds what it held "
        "before, no item lost or half-written",
        at_once="interrupted at once: agent memory holds what it held before; a collection "
        "swap cut short is finished the next time agent memory is opened",
    ):
        report = maintenance.compact()
    if as_json:
        print_json(report.as_dict())
    else:
        _print_maintenance(report)


@persistence_app.command("clear-cache")
def clear_cache(
    ctx: typer.Context,
    which: Annotated[
        str, typer.Option("--cache", help="completion, analysis or all.", metavar="NAME")
    ] = "all",
    counters: Annotated[
        bool, typer.Option("--counters", help="Also reset the caches' hit/miss counters.")
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Drop the completion and/or analysis cache's entries (in Redis when configured)."""
    from multiagent.models.analysis_cache import open_analysis_cache
    from multiagent.models.completion_cache import open_completion_cache

    names = {"completion": ("completion",), "analysis": ("analysis",), "all": _CACHES}
    if which not in names:
        raise UsageError(f"unknown --cache {which!r}; valid: {', '.join(names)}")
    settings = cli_settings(ctx)
    config, home, redis = settings.profile.cache, settings.home, settings.redis_url
    caches: dict[str, Any] = {
        "completion": lambda: open_completion_cache(
            home, ttl_s=config.completion_ttl_s, redis_url=redis
        ),
        "analysis": lambda: open_analysis_cache(home, ttl_s=config.analysis_ttl_s, redis_url=redis),
    }
    dropped: dict[str, int] = {}
    for name in names[which]:
        cache = caches[name]()
        dropped[name] = len(cache) if name == "analysis" else cache.stats().entries
        cache.clear(counters=counters)
    where = "redis" if redis else "embedded"
    if as_json:
        print_json({"store": where, "dropped": dropped, "counters_reset": counters})
        return
    for name, count in dropped.items():
        print_plain(f"{name} cache ({where}): {count} entries dropped")


_CACHES = ("completion", "analysis")

NEW_KEY_ENV = "MULTIAGENT_NEW_ENCRYPTION_KEY"


@persistence_app.command("rotate-key")
def rotate_key(
    ctx: typer.Context,
    new_key_file: Annotated[
        Path | None,
        typer.Option(
            "--new-key-file", help=f"File holding the new key (else {NEW_KEY_ENV} is read)."
        ),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Seal checkpoints, snapshots and backups with a new key (resumable; keep the old key
    in MULTIAGENT_ENCRYPTION_KEY until it finishes, then configure the new one)."""
    import os

    from multiagent.persistence.crypto import configured_key, parse_key, read_key_file
    from multiagent.persistence.rotation import rotate_key as rotate

    settings = cli_settings(ctx)
    if new_key_file is not None:
        new_key = read_key_file(new_key_file, source="--new-key-file")
    elif os.environ.get(NEW_KEY_ENV):
        new_key = parse_key(os.environ[NEW_KEY_ENV], source=NEW_KEY_ENV)
    else:
        raise UsageError(f"rotate-key needs the new key: --new-key-file FILE or {NEW_KEY_ENV}")
    report = rotate(settings, new_key=new_key, old_key=configured_key())
    if as_json:
        print_json(report.as_dict())
        return
    for store, count in report.rotated.items():
        console.print(f"{store}: {count} sealed again, {report.already.get(store, 0)} already")
    console.print(
        f"every blob is now under key id {report.new_key_id}; configure the new key "
        "(MULTIAGENT_ENCRYPTION_KEY or MULTIAGENT_ENCRYPTION_KEY_FILE)"
    )


DEFAULT_METRICS_HOOK = "multiagent.observability.history:metrics_persist_hook"


def _load_hook(spec: str, settings: Settings) -> Task:
    """``MODULE:FACTORY``, where ``FACTORY(settings)`` returns the hook to call every 5 min."""
    module_name, _, factory_name = spec.partition(":")
    try:
        hook = getattr(importlib.import_module(module_name), factory_name)(settings)
    except (ImportError, AttributeError, ValueError, TypeError):
        raise UsageError(
            f"cannot load metrics hook {spec!r}; give MODULE:FACTORY, FACTORY(settings) "
            "returning the function to call"
        ) from None
    if not callable(hook):
        raise UsageError(f"metrics hook {spec!r} did not return a function")
    return cast("Task", hook)


@persistence_app.command("scheduler")
def scheduler(
    ctx: typer.Context,
    timezone: TimezoneOption = None,
    run_now: Annotated[
        str | None, typer.Option("--run-now", help=f"Run one task now and exit: {TASK_NAMES}.")
    ] = None,
    duration: Annotated[
        float | None, typer.Option("--duration", min=0.0, help="Stop after this many seconds.")
    ] = None,
    metrics_hook: Annotated[
        str,
        typer.Option("--metrics-hook", help="MODULE:FACTORY(settings) giving the metrics hook."),
    ] = DEFAULT_METRICS_HOOK,
    as_json: JsonFlag = False,
) -> None:
    """Run the maintenance schedule in the foreground (Ctrl-C stops it)."""
    from multiagent._interrupt import from_signal_handler
    from multiagent.persistence.checkpointer import ensure_home
    from multiagent.persistence.scheduler import MemoryPersistenceScheduler

    settings = cli_settings(ctx)
    if run_now is not None and run_now not in TASK_NAMES:
        raise UsageError(f"unknown task {run_now!r}; valid: {', '.join(TASK_NAMES)}")
    hook = _load_hook(metrics_hook, settings)
    zone = "UTC" if timezone is None else timezone  # "" is a bad name, not the default
    runner = MemoryPersistenceScheduler(settings, timezone=zone, metrics_hook=hook)
    ensure_home(settings)  # after every value is checked: bad input creates nothing
    if run_now is not None:
        record = runner.run_task(run_now)
        if as_json:
            print_json(record)
        else:
            _print_task_run(record)
        if record["last_status"] == "failed":
            raise typer.Exit(code=1)
        return
    stop = threading.Event()
    previous: Any = None
    if threading.current_thread() is threading.main_thread():
        # set off the main thread: the handler may interrupt its wait, the event's lock held
        previous = signal.signal(signal.SIGTERM, lambda *_: from_signal_handler(stop.set))
    try:
        runner.start()  # refused before anything is printed when a scheduler runs already
        if not as_json:
            for name, moment in runner.next_runs().items():
                console.print(f"{name}: next run {moment}")
        runner.run_forever(stop=stop, duration_s=duration)
    finally:
        runner.shutdown()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    if as_json:
        print_json(runner.status())


def _print_task_run(record: dict[str, Any]) -> None:
    """One task's run as lines: its outcome and time, its error or what it did, its next run."""
    said = f"{record['task']}: {record['last_status']} in {record['last_duration_s']} s"
    console.print(f"{said} · next run {record['next_run']}", markup=False, highlight=False)
    if record.get("last_error"):
        console.print(f"error: {record['last_error']}", markup=False, highlight=False)
    result = record.get("last_result")
    for key, value in result.items() if isinstance(result, dict) else [("result", result)]:
        shown = json.dumps(value, default=str) if isinstance(value, dict | list) else value
        console.print(f"  {key}: {shown}", markup=False, highlight=False, soft_wrap=True)
