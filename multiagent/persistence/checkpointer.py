"""The checkpointer every compiled graph uses: SQLite under ``MULTIAGENT_HOME`` by default,
PostgreSQL when ``MULTIAGENT_CHECKPOINT_URL`` is a ``postgresql://`` URL, memory on request.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.sqlite import SqliteSaver

from multiagent._sqlite import ensure_wal
from multiagent.errors import ConfigError, UsageError
from multiagent.policies import Settings

CHECKPOINT_DB = "checkpoints.sqlite"


def checkpoint_path(settings: Settings) -> Path:
    """Where the embedded SQLite checkpointer keeps its database."""
    return settings.home / CHECKPOINT_DB


def ensure_home(settings: Settings) -> Path:
    """Create the data directory, or fail with one clear line when it cannot be written."""
    home = settings.home
    try:
        home.mkdir(parents=True, exist_ok=True)
        # a name of its own: two threads of one server probing at once must not unlink each
        # other's file (a fixed name made one of them fail with FileNotFoundError)
        probe = home / f".write-probe-{uuid.uuid4().hex}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise UsageError(
            f"data directory {home} is not writable ({exc.strerror}); "
            "set MULTIAGENT_HOME or --home to a writable directory"
        ) from None
    return home


@contextmanager
def open_checkpointer(
    settings: Settings, *, kind: str | None = None
) -> Iterator[BaseCheckpointSaver[str]]:
    """Open the configured checkpointer for the duration of a ``with`` block.

    Args:
        settings: Resolved settings; ``checkpoint_url`` selects PostgreSQL.
        kind: ``"sqlite"``, ``"postgres"`` or ``"memory"`` to force a backend.
    """
    url = settings.checkpoint_url
    chosen = kind or (
        "postgres" if url and url.startswith(("postgresql://", "postgres://")) else "sqlite"
    )
    if chosen == "memory":
        yield InMemorySaver()
        return
    if chosen == "postgres":
        if not url:
            raise ConfigError(
                "the postgres checkpointer needs MULTIAGENT_CHECKPOINT_URL=postgresql://..."
            )
        from multiagent.persistence.postgres import open_postgres_checkpointer

        with open_postgres_checkpointer(url) as postgres_saver:
            yield postgres_saver
        return
    if chosen != "sqlite":
        raise ConfigError(f"unknown checkpointer {chosen!r}; valid: sqlite, postgres, memory")
    ensure_home(settings)
    conn = sqlite3.connect(checkpoint_path(settings), check_same_thread=False, timeout=30.0)
    try:
        ensure_wal(conn)
        saver = SqliteSaver(conn)
        saver.setup()
        yield saver
    finally:
        conn.close()
