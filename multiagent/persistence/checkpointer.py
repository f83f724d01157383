"""The checkpointer every compiled graph uses: SQLite under ``MULTIAGENT_HOME`` by default,
PostgreSQL when ``MULTIAGENT_CHECKPOINT_URL`` is a ``postgresql://`` URL, memory on request.

:func:`open_checkpointer` gives LangGraph's sync savers (the CLI, ``invoke`` and ``stream``);
:func:`open_async_checkpointer` their async twins (``AsyncSqliteSaver``, ``AsyncPostgresSaver``)
over the same database, with the same encryption and private metadata, for ``ainvoke`` and
``astream``: LangGraph's sync savers refuse async calls.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
)
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.serde.base import SerializerProtocol
from langgraph.checkpoint.serde.encrypted import EncryptedSerializer
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

from multiagent._sqlite import ensure_wal
from multiagent.errors import ConfigError, UsageError
from multiagent.persistence.crypto import (
    Keyring,
    checkpoint_key_id,
    configured_keyring,
    private_put_args,
)
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


def check_home(settings: Settings) -> None:
    """Fail as :func:`ensure_home` would, without creating anything: the data directory, or
    the nearest part of its path that exists, must be a directory this process can write."""
    home = settings.home
    existing = next((p for p in (home, *home.parents) if p.exists()), None)
    if existing is None or (existing.is_dir() and os.access(existing, os.W_OK | os.X_OK)):
        return
    reason = "Not a directory" if not existing.is_dir() else "Permission denied"
    raise UsageError(
        f"data directory {home} is not writable ({reason}); "
        "set MULTIAGENT_HOME or --home to a writable directory"
    )


class _ErrorsRedacted(JsonPlusSerializer):
    """LangGraph's serializer, storing a failed step's error with its personal values and
    secrets as placeholders when ``redact_errors`` (the profile's ``features.pii_redaction``).

    LangGraph keeps the exception a step raised among the checkpoint's writes, as its ``repr``
    (what this serializer makes of an exception): a provider's error may echo what it was sent,
    an ``Authorization`` header included. The same ``repr``, redacted, is stored instead.
    """

    redact_errors = False

    def dumps_typed(self, obj: Any) -> tuple[str, bytes]:
        """Serialize ``obj``; an exception as its (redacted) ``repr``."""
        if self.redact_errors and isinstance(obj, BaseException):
            from multiagent.safety import redact_text

            obj = redact_text(repr(obj)).text
        return super().dumps_typed(obj)


class _PlainSerializer(_ErrorsRedacted):
    """LangGraph's default serializer, refusing encrypted checkpoints in one clear line."""

    def __init__(self, keyring: Keyring) -> None:
        super().__init__()
        self._keyring = keyring

    def loads_typed(self, data: tuple[str, bytes]) -> Any:
        """Load a plaintext checkpoint; an encrypted one names the key it needs."""
        key_id = checkpoint_key_id(data[0])
        if key_id is not None:
            self._keyring.cipher().decrypt(data[0].split("+", 1)[1], data[1])
        return super().loads_typed(data)


class PrivateMetadataSaver(BaseCheckpointSaver[str]):
    """A saver (mixed in before SQLite's or PostgreSQL's) whose plain-JSON metadata loses the
    keys that hold user text; values are encrypted by the serializer."""

    def _prepare(self, checkpoint: Checkpoint) -> Checkpoint:
        """The checkpoint as the backend should store it (a hook for PostgreSQL)."""
        return checkpoint

    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        """Store a checkpoint with the private metadata keys left out."""
        config, metadata = private_put_args(config, metadata)
        return super().put(config, self._prepare(checkpoint), metadata, new_versions)

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        """:meth:`put` for the async savers."""
        config, metadata = private_put_args(config, metadata)
        return await super().aput(config, self._prepare(checkpoint), metadata, new_versions)


class EncryptedSqliteSaver(PrivateMetadataSaver, SqliteSaver):
    """``SqliteSaver`` for encrypted checkpoints: metadata without user text."""


class EncryptedAsyncSqliteSaver(PrivateMetadataSaver, AsyncSqliteSaver):
    """``AsyncSqliteSaver`` for encrypted checkpoints: metadata without user text."""


def checkpoint_serde(
    keyring: Keyring | None = None, *, redact_errors: bool = False
) -> SerializerProtocol:
    """The serializer checkpoints go through: LangGraph's encrypted one when a key is set.

    With no key, LangGraph's default serializer writes plaintext as before, and a checkpoint
    that was encrypted is refused with a line saying which key it needs. With
    ``redact_errors``, a failed step's stored error is redacted (:class:`_ErrorsRedacted`).
    """
    ring = keyring if keyring is not None else configured_keyring()
    if ring.enabled:
        from multiagent.persistence.crypto import checkpoint_serializer

        inner = _ErrorsRedacted()
        inner.redact_errors = redact_errors
        return checkpoint_serializer(ring, inner=inner)
    plain = _PlainSerializer(ring)
    plain.redact_errors = redact_errors
    return plain


def _backend(settings: Settings, kind: str | None) -> str:
    """``kind``, else the backend ``settings.checkpoint_url`` names (SQLite when none)."""
    url = settings.checkpoint_url
    chosen = kind or (
        "postgres" if url and url.startswith(("postgresql://", "postgres://")) else "sqlite"
    )
    if chosen not in ("sqlite", "postgres", "memory"):
        raise ConfigError(f"unknown checkpointer {chosen!r}; valid: sqlite, postgres, memory")
    if chosen == "postgres" and not url:
        raise ConfigError(
            "the postgres checkpointer needs MULTIAGENT_CHECKPOINT_URL=postgresql://..."
        )
    return chosen


def checkpoint_backend(settings: Settings) -> str:
    """``"sqlite"`` or ``"postgres"``: the backend :func:`open_checkpointer` opens by default."""
    return _backend(settings, None)


@contextmanager
def open_checkpointer(
    settings: Settings,
    *,
    kind: str | None = None,
    keyring: Keyring | None = None,
    read_only: bool = False,
) -> Iterator[BaseCheckpointSaver[str]]:
    """Open the configured checkpointer for the duration of a ``with`` block.

    Args:
        settings: Resolved settings; ``checkpoint_url`` selects PostgreSQL.
        kind: ``"sqlite"``, ``"postgres"`` or ``"memory"`` to force a backend.
        keyring: Keys to seal and open checkpoints with (default: the configured key,
            ``MULTIAGENT_ENCRYPTION_KEY``; none means plaintext).
        read_only: Read an existing SQLite file and create nothing, for a reader on a home
            it may only read (a dashboard given the data directory read-only); a write
            through the saver fails. Other backends open as usual.
    """
    chosen = _backend(settings, kind)
    if chosen == "memory":
        yield InMemorySaver()
        return
    serde = checkpoint_serde(keyring, redact_errors=settings.profile.features.pii_redaction)
    if chosen == "postgres":
        from multiagent.persistence.postgres import open_postgres_checkpointer

        with open_postgres_checkpointer(str(settings.checkpoint_url), serde=serde) as saver:
            yield saver
        return
    conn = _sqlite_reader(settings) if read_only else _sqlite_file(settings)
    try:
        encrypted = isinstance(serde, EncryptedSerializer)
        sqlite_saver = (EncryptedSqliteSaver if encrypted else SqliteSaver)(conn, serde=serde)
        sqlite_saver.setup()
        yield sqlite_saver
    finally:
        conn.close()


@asynccontextmanager
async def open_async_checkpointer(
    settings: Settings, *, kind: str | None = None, keyring: Keyring | None = None
) -> AsyncIterator[BaseCheckpointSaver[str]]:
    """Open the configured checkpointer's async saver for the duration of an ``async with``.

    The same database, encryption and private metadata as :func:`open_checkpointer`, through
    LangGraph's ``AsyncSqliteSaver`` or ``AsyncPostgresSaver``: for ``ainvoke``, ``astream``
    and ``aget_state`` (the sync savers raise on those). Its arguments are
    :func:`open_checkpointer`'s.
    """
    chosen = _backend(settings, kind)
    if chosen == "memory":
        yield InMemorySaver()
        return
    serde = checkpoint_serde(keyring, redact_errors=settings.profile.features.pii_redaction)
    if chosen == "postgres":
        from multiagent.persistence.postgres import open_async_postgres_checkpointer

        url = str(settings.checkpoint_url)
        async with open_async_postgres_checkpointer(url, serde=serde) as saver:
            yield saver
        return
    import aiosqlite

    # created and switched to WAL as the sync saver's file is (the mode stays with the file)
    await asyncio.to_thread(lambda: _sqlite_file(settings).close())
    async with aiosqlite.connect(checkpoint_path(settings), timeout=30.0) as conn:
        encrypted = isinstance(serde, EncryptedSerializer)
        async_saver = (EncryptedAsyncSqliteSaver if encrypted else AsyncSqliteSaver)(
            conn, serde=serde
        )
        await async_saver.setup()
        yield async_saver


def _sqlite_file(settings: Settings) -> sqlite3.Connection:
    """A connection to the home's checkpoint database, created if new, in WAL mode."""
    ensure_home(settings)
    conn = sqlite3.connect(checkpoint_path(settings), check_same_thread=False, timeout=30.0)
    try:
        ensure_wal(conn)
    except BaseException:
        conn.close()
        raise
    return conn


def _sqlite_reader(settings: Settings) -> sqlite3.Connection:
    """A read-only connection to the home's checkpoint database (see
    :func:`~multiagent.persistence.health.read_only_uri`): nothing is created beside it."""
    from multiagent.persistence.health import read_only_uri

    uri = read_only_uri(checkpoint_path(settings).resolve())
    return sqlite3.connect(uri, uri=True, check_same_thread=False, timeout=30.0)
