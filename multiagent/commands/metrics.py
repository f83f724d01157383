"""``multiagent metrics serve|show|history``: the metrics server and the recorded history."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from multiagent._serve import wait_until_stopped
from multiagent.commands._shared import (
    JsonOption,
    cli_settings,
    console,
    leave_no_audit_record,
    print_json,
    print_plain,
)
from multiagent.policies import Settings

metrics_app = typer.Typer(
    help="Metrics of the runs: Prometheus/JSON server, summary, 24-hour history.",
    no_args_is_help=True,
)


@metrics_app.command("serve")
def serve(
    ctx: typer.Context,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="TCP port; 0 picks one.")] = 9464,
) -> None:
    """Serve the dashboard at /, /metrics (Prometheus), /metrics/summary, /metrics/history and
    /metrics/cache. A non-loopback --host needs MULTIAGENT_METRICS_TOKEN."""
    from multiagent.dashboard.security import TOKEN_ENV, check_bind
    from multiagent.distributed.metrics import install_queue_metrics
    from multiagent.observability.server import run_metrics_server  # loads the server stack

    token = os.environ.get(TOKEN_ENV) or None
    check_bind(host, token)  # before anything is opened
    # a damaged database does not stop the dashboard: what reads it answers 503 naming it,
    # the rest is served, and the file is left as it is for `persistence repair` or a backup
    settings = cli_settings(ctx, check_stores=False)
    _warn_damaged(settings.home)
    _say_if_read_only(ctx, settings)
    uninstall = install_queue_metrics(settings)  # queue gauges when MULTIAGENT_REDIS_URL is set
    try:
        with run_metrics_server(settings, host=host, port=port, token=token) as url:
            sys.stdout.write(f"multiagent metrics listening on {url}\n")
            sys.stdout.write(f"dashboard: {url}/ · prometheus: {url}/metrics\n")
            sys.stdout.flush()
            wait_until_stopped()
    finally:
        uninstall()


def _say_if_read_only(ctx: typer.Context, settings: Settings) -> None:
    """On a home it may only read (a mounted backup, another user's data), the server writes
    nothing there, its own audit record included: one line says so now, rather than a warning
    at exit that the trail could not be written."""
    from multiagent.errors import UsageError
    from multiagent.persistence.checkpointer import check_home

    try:
        check_home(settings)
    except UsageError:
        leave_no_audit_record(ctx)
        sys.stderr.write(
            f"data directory {settings.home} may only be read: serving it read-only, "
            "with no audit record of this serve\n"
        )


def _warn_damaged(home: Path) -> None:
    """One line on stderr per damaged database of ``home``: what it is, how to recover."""
    from multiagent.persistence.health import find_damaged

    for damage in find_damaged(home, thorough=False):
        sys.stderr.write(
            f"warning: damaged database {damage.path}: {damage.reason}; {damage.recovery(home)}"
            " (serving the rest; what reads it answers 503, and the file is left as it is)\n"
        )


def _money(value: float) -> str:
    return f"${value:.6f}"


def _print_summary(summary: dict[str, Any]) -> None:
    calls, tokens = summary["calls"], summary["tokens"]
    errors, cache = summary["errors"], summary["cache"]
    table = Table(title="metrics · all recorded runs", title_justify="left", show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    table.add_row(
        "calls",
        f"{calls['total']} ({calls['ok']} ok, {calls['error']} failed, {calls['cached']} cached"
        + (f", {calls['cancelled']} cancelled)" if calls["cancelled"] else ")"),
    )
    table.add_row("tokens", f"{tokens['input']} in, {tokens['output']} out")
    table.add_row("cost", _money(summary["cost_usd"]))
    kinds = ", ".join(f"{k} {v}" for k, v in errors["by_kind"].items())
    table.add_row("errors", f"{errors['total']}" + (f" ({kinds})" if kinds else ""))
    table.add_row("retries", str(summary["retries"]["total"]))
    table.add_row("latency (avg)", f"{summary['latency']['avg_s'] * 1000:.1f} ms")
    table.add_row("completion cache", f"{cache['completion']['hit_rate']:.1%} hit rate")
    table.add_row("analysis cache", f"{cache['analysis']['hit_rate']:.1%} hit rate")
    console.print(table)
    if summary["models"]:
        models = Table(title="per model (tokens in and out)", title_justify="left")
        models.add_column("model", no_wrap=True)
        for column in ("calls", "cached", "errors", "in", "out"):
            models.add_column(column, justify="right")
        models.add_column("cost", justify="right", no_wrap=True)
        models.add_column("latency", justify="right", no_wrap=True)
        for name, row in summary["models"].items():
            models.add_row(
                name,
                str(row["calls"]["total"]),
                str(row["calls"]["cached"]),
                str(row["errors"]),
                str(row["input_tokens"]),
                str(row["output_tokens"]),
                _money(row["cost_usd"]),
                f"{row['latency_avg_s'] * 1000:.1f} ms",
            )
        console.print(models)
    last = summary["source"]["last_persist"]
    where = summary["source"]["history"]
    console.print(f"history: {where}" + (f" · last written {last['at']}" if last else " (empty)"))


@metrics_app.command("show")
def show(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Show calls, tokens, cost, errors, latency and cache hit rates of every recorded run."""
    from multiagent.distributed.metrics import queues_summary
    from multiagent.observability.cache_stats import shared_cache_summary
    from multiagent.observability.server import metrics_summary

    settings = cli_settings(ctx)
    summary = metrics_summary(settings)
    shared = shared_cache_summary(settings)
    if shared is not None:  # MULTIAGENT_REDIS_URL set: the caches' counters, fleet-wide
        summary["cache"] = shared
    queues = queues_summary(settings)
    if queues is not None:  # MULTIAGENT_REDIS_URL set: every queue's figures, fleet-wide
        summary["queues"] = queues
    if as_json:
        print_json(summary)
    elif (
        summary["calls"]["total"] == 0 and summary["source"]["last_persist"] is None and not queues
    ):
        print_plain(f"no model calls recorded yet in {settings.home}")
    else:
        _print_summary(summary)
        for queue, figures in (queues or {}).items():
            shown = " · ".join(f"{k.replace('_', ' ')} {v:g}" for k, v in figures.items())
            console.print(f"queue {queue}: {shown}", highlight=False)


@metrics_app.command("history")
def history(
    ctx: typer.Context,
    hours: Annotated[int, typer.Option("--hours", help="Hours of history, 1 to 24.")] = 1,
    as_json: JsonOption = False,
) -> None:
    """Show the recorded 5-minute points of the last HOURS (empty points are left out)."""
    from multiagent.observability.history import MetricsHistory, check_hours

    check_hours(hours)
    points = MetricsHistory(cli_settings(ctx)).points(hours=hours)
    if as_json:
        print_json({"hours": hours, "bucket_seconds": 300, "points": points})
        return
    busy = [p for p in points if p["calls"] or p["cached"]]
    if not busy:
        console.print(f"no model calls recorded in the last {hours} h")
        return
    table = Table(title=f"the last {hours} h, 5-minute points", title_justify="left")
    for column in ("start (UTC)", "calls", "cached", "errors", "tokens in", "tokens out"):
        start = column.startswith("start")
        table.add_column(column, justify="left" if start else "right", no_wrap=start)
    table.add_column("cost", justify="right")
    for point in busy:
        table.add_row(
            point["start"][:16].replace("T", " "),
            *(str(point[k]) for k in ("calls", "cached", "errors", "input_tokens")),
            str(point["output_tokens"]),
            _money(point["cost_usd"]),
        )
    console.print(table)
