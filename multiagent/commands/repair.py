"""``multiagent persistence repair``: find damaged databases, rebuild what can be rebuilt."""

from __future__ import annotations

from typing import Annotated

import typer

from multiagent.commands._shared import cli_settings, print_json, print_plain
from multiagent.errors import DamagedStoreError


def repair(
    ctx: typer.Context,
    check: Annotated[
        bool, typer.Option("--check", help="Only report damaged files; change nothing.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
) -> None:
    """Check every database in the data directory; move damaged derived data (metrics history,
    caches) aside so it starts afresh, and restore damaged agent memory from the newest backup.
    Temporaries that a killed snapshot, backup or key rotation left are removed once an hour old.

    Exit code 0 when nothing damaged is left, 2 (with one line naming the file and how to
    recover) when a damaged file needs a backup to come back.
    """
    from multiagent.persistence.health import repair as repair_home
    from multiagent.persistence.leftovers import remove_leftovers

    settings = cli_settings(ctx, check_stores=False)
    report = repair_home(settings.home, dry_run=check)
    leftovers = remove_leftovers(settings.home, dry_run=check)
    if as_json:
        print_json(
            {"home": str(settings.home), "check": check, "damaged": report, "leftovers": leftovers}
        )
    elif not report:
        print_plain(f"no damaged database in {settings.home}")
    for entry in report if not as_json else []:
        print_plain(f"{entry['path']}: {entry['reason']} -> {entry['action']}")
    for temporary in leftovers if not as_json else []:
        print_plain(f"{temporary['path']}: left by an interrupted write -> {temporary['action']}")
    left = [
        entry
        for entry in report
        if entry["action"] != "moved aside" and not entry["action"].startswith("restored")
    ]
    if left:
        first = left[0]
        raise DamagedStoreError(f"damaged database {first['path']}: {first['recovery']}")
