"""``multiagent profile``: the resolved configuration and where each value came from."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated, Any

import typer
from rich.table import Table

from multiagent.commands._shared import cli_settings, console, print_json
from multiagent.policies import BUILTIN_PROFILES, COST_POLICIES, TIERS, Settings
from multiagent.policies.settings import flatten


def _catalogue() -> dict[str, Any]:
    return {
        "profiles": {name: p.description for name, p in BUILTIN_PROFILES.items()},
        "policies": {name: p.description for name, p in COST_POLICIES.items()},
    }


def _project_spend(settings: Settings) -> dict[str, Any]:
    """The project budget's figures for today, with the store that keeps them and when the
    day ends: a day is a UTC date, which is not the reader's own past some hour of theirs."""
    from multiagent.models.budget import open_project_budget

    store = open_project_budget(settings)  # Redis (every process's holds) or SQLite
    if store is None:
        return {}
    spend = {"store": "sqlite", **store.report()}
    if spend.get("period"):  # a Redis store away reports no period
        day = date.fromisoformat(spend["period"]) + timedelta(days=1)
        spend["resets_at"] = datetime.combine(day, time(), tzinfo=UTC).isoformat()
    return spend


def profile(
    ctx: typer.Context,
    env: Annotated[
        str | None,
        typer.Option(
            "--env",
            help="Profile name (default: MULTIAGENT_ENV, else env in multiagent.toml, else "
            "dev_balanced).",
        ),
    ] = None,
    policy: Annotated[
        str | None,
        typer.Option(
            "--policy",
            help="Cost policy (default: MULTIAGENT_POLICY, else policy in multiagent.toml, else "
            "balanced).",
        ),
    ] = None,
    list_all: Annotated[bool, typer.Option("--list", help="List profiles and policies.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
) -> None:
    """Show the resolved profile, policy and settings, with the source of every value."""
    if list_all:
        catalogue = _catalogue()
        if as_json:
            print_json(catalogue)
            return
        for kind, entries in catalogue.items():
            table = Table(title=kind.capitalize(), title_justify="left")
            table.add_column("name", style="bold")
            table.add_column("description")
            for name, text in entries.items():
                table.add_row(name, text)
            console.print(table)
        return
    settings = cli_settings(ctx, env=env, policy=policy)
    report = settings.as_report()
    for tier in TIERS:  # a configured model without a price is a configuration error
        settings.profile.require_price(settings.profile.models.for_tier(tier))
    if settings.profile.budget.daily_usd is not None:
        report["project_spend"] = _project_spend(settings)
    if as_json:
        print_json(report)
        return
    table = Table(
        title=f"profile {settings.env} · policy {settings.policy} · provider {settings.provider}",
        title_justify="left",
    )
    rows = {
        k: v for k, v in report.items() if k not in ("profile", "sources", "sim", "project_spend")
    }
    rows.update({f"project_spend.{k}": v for k, v in report.get("project_spend", {}).items()})
    rows.update(flatten(report["profile"]))
    rows.update({f"sim.{k}": v for k, v in report["sim"].items()})
    table.add_column("setting", style="bold", no_wrap=True, min_width=max(map(len, rows)))
    table.add_column("value", overflow="fold")
    table.add_column("source", style="dim", overflow="fold")
    for key, value in rows.items():
        table.add_row(key, str(value), report["sources"].get(key, "derived"))
    console.print(table)
