"""PostgreSQL at scale: LangGraph's ``PostgresSaver``, and pruning through its ``prune``.

``PostgresSaver.prune`` offers two strategies (read in langgraph-checkpoint-postgres):
``"delete"`` removes every checkpoint, write and blob of the given threads in one transaction;
``"keep_latest"`` keeps the latest checkpoint of each namespace with its pending writes (which is
where a pending interrupt lives) and the blobs it references, and refuses threads that use a
``DeltaChannel``. It cannot keep the last N, so on PostgreSQL a thread over the limit is cut to
its latest checkpoint.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

import psycopg
from langgraph.checkpoint.base import ChannelVersions, Checkpoint
from langgraph.checkpoint.postgres import PostgresSaver
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
from langgraph.checkpoint.serde.base import SerializerProtocol
from langgraph.checkpoint.serde.encrypted import EncryptedSerializer
from psycopg.rows import dict_row

from multiagent.errors import UsageError
from multiagent.persistence.checkpointer import PrivateMetadataSaver
from multiagent.persistence.run_usage import forget_threads

TABLES = ("checkpoints", "checkpoint_blobs", "checkpoint_writes")
#: The session-level advisory lock held while the checkpointer's tables are set up.
SETUP_LOCK = 0x6D756C7469  # "multi"
SETUP_POLL_S = 0.05
#: The transaction-level advisory lock held while one of our own tables is created.
SCHEMA_LOCK = 0x6D7363686D  # "mschm"


def mask_url(url: str) -> str:
    """The URL without its user and password."""
    if "@" not in url:
        return url
    scheme, _, rest = url.partition("://")
    return f"{scheme}://***@{rest.rpartition('@')[2]}"


def connect(url: str, *, timeout_s: int = 5) -> psycopg.Connection[dict[str, Any]]:
    """Connect the way ``PostgresSaver.from_conn_string`` does, failing as one clear line.

    Raises:
        UsageError: The URL is malformed or the server cannot be reached or refuses us.
    """
    try:
        return psycopg.Connection.connect(url, connect_timeout=timeout_s, **_SAVER_CONNECTION)
    except psycopg.Error as exc:
        raise _unreachable(url, exc) from None


def create_table(conn: psycopg.Connection[Any], ddl: str) -> None:
    """Run ``ddl`` (a ``CREATE TABLE IF NOT EXISTS``) with no other process creating one at once.

    ``IF NOT EXISTS`` checks before it creates: two processes opening a fresh database
    together both go on to create, and the second fails (UniqueViolation on the table's
    type or name, DuplicateObject, DuplicateTable). Under :data:`SCHEMA_LOCK`, taken in the
    creating transaction and released as it commits, the second sees the first's table and
    skips it. Waiting for it is safe, where :data:`SETUP_LOCK` is only tried: its holder
    creates a table, which waits for no other transaction (a migration's ``CREATE INDEX
    CONCURRENTLY`` does).
    """
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
        conn.execute(ddl)


async def aconnect(url: str, *, timeout_s: int = 5) -> psycopg.AsyncConnection[dict[str, Any]]:
    """:func:`connect` for ``AsyncPostgresSaver``."""
    try:
        return await psycopg.AsyncConnection.connect(
            url, connect_timeout=timeout_s, **_SAVER_CONNECTION
        )
    except psycopg.Error as exc:
        raise _unreachable(url, exc) from None


#: The connection LangGraph's savers expect (what their ``from_conn_string`` opens).
_SAVER_CONNECTION: dict[str, Any] = {
    "autocommit": True,
    "prepare_threshold": 0,
    "row_factory": dict_row,
}


def _unreachable(url: str, exc: psycopg.Error) -> UsageError:
    reason = " ".join(str(exc).split()) or type(exc).__name__
    return UsageError(
        f"cannot connect to PostgreSQL at {mask_url(url)} ({reason}); "
        "check MULTIAGENT_CHECKPOINT_URL (postgresql://user:password@host:port/database)"
    )


@dataclass(frozen=True)
class _Boxed:
    """A primitive channel value on its way to the (encrypted) blobs table."""

    value: Any


class _SealedPrimitives(PrivateMetadataSaver):
    """A PostgreSQL saver (mixed in before LangGraph's) that stores no channel value in the clear.

    ``PostgresSaver.put`` keeps primitive channel values (a task string, a count) inline in the
    ``checkpoints.checkpoint`` JSONB column, where no serializer sees them. Boxed here, they are
    not primitives, so they go to ``checkpoint_blobs`` through the encrypted serializer; the
    box is taken off in ``_dump_blobs``, so what is stored, and later loaded, is the value.
    Metadata (plain JSONB, for filtering) loses the keys that hold user text.
    """

    def _prepare(self, checkpoint: Checkpoint) -> Checkpoint:
        """Box the primitive channel values, so they go to the encrypted blobs."""
        values = {
            k: _Boxed(v) if isinstance(v, str | int | float) else v
            for k, v in checkpoint["channel_values"].items()
        }
        return {**checkpoint, "channel_values": values}

    def _dump_blobs(
        self,
        thread_id: str,
        checkpoint_ns: str,
        values: dict[str, Any],
        versions: ChannelVersions,
    ) -> list[tuple[str, str, str, str, str, bytes | None]]:
        unboxed = {k: v.value if isinstance(v, _Boxed) else v for k, v in values.items()}
        return super()._dump_blobs(  # type: ignore[misc, no-any-return]
            thread_id, checkpoint_ns, unboxed, versions
        )


class EncryptedPostgresSaver(_SealedPrimitives, PostgresSaver):
    """``PostgresSaver`` for encrypted checkpoints (:class:`_SealedPrimitives`)."""


class EncryptedAsyncPostgresSaver(_SealedPrimitives, AsyncPostgresSaver):
    """``AsyncPostgresSaver`` for encrypted checkpoints (:class:`_SealedPrimitives`)."""


@contextmanager
def open_postgres_checkpointer(
    url: str, *, timeout_s: int = 5, serde: SerializerProtocol | None = None
) -> Iterator[PostgresSaver]:
    """Open LangGraph's PostgreSQL checkpointer, its tables created or migrated.

    Args:
        url: A ``postgresql://`` connection URL.
        timeout_s: Seconds to wait for the server before giving up.
        serde: The checkpoint serializer; an :class:`EncryptedSerializer` also keeps
            primitive channel values out of the clear (:class:`EncryptedPostgresSaver`).

    Raises:
        UsageError: The server cannot be reached (one line, exit code 2 on the CLI).
    """
    with connect(url, timeout_s=timeout_s) as conn:
        encrypted = isinstance(serde, EncryptedSerializer)
        saver = (EncryptedPostgresSaver if encrypted else PostgresSaver)(conn, serde=serde)
        # setup() creates and migrates the tables with no lock of its own: processes opening a
        # fresh database together collided (UniqueViolation on the new types); one at a time.
        # Not a waiting pg_advisory_lock: a migration's CREATE INDEX CONCURRENTLY waits for
        # every open transaction, the waiting lock's statement included, which waits for it
        while not _try_setup_lock(conn):
            time.sleep(SETUP_POLL_S)
        try:
            saver.setup()
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (SETUP_LOCK,))
        yield saver


@asynccontextmanager
async def open_async_postgres_checkpointer(
    url: str, *, timeout_s: int = 5, serde: SerializerProtocol | None = None
) -> AsyncIterator[AsyncPostgresSaver]:
    """:func:`open_postgres_checkpointer` for ``AsyncPostgresSaver`` (the same tables)."""
    async with await aconnect(url, timeout_s=timeout_s) as conn:
        encrypted = isinstance(serde, EncryptedSerializer)
        saver = (EncryptedAsyncPostgresSaver if encrypted else AsyncPostgresSaver)(
            conn, serde=serde
        )
        while not await _atry_setup_lock(conn):  # see open_postgres_checkpointer
            await asyncio.sleep(SETUP_POLL_S)
        try:
            await saver.setup()
        finally:
            await conn.execute("SELECT pg_advisory_unlock(%s)", (SETUP_LOCK,))
        yield saver


_TRY_SETUP_LOCK = "SELECT pg_try_advisory_lock(%s) AS got"


def _try_setup_lock(conn: psycopg.Connection[dict[str, Any]]) -> bool:
    row = conn.execute(_TRY_SETUP_LOCK, (SETUP_LOCK,)).fetchone()
    return bool(row and row["got"])


async def _atry_setup_lock(conn: psycopg.AsyncConnection[dict[str, Any]]) -> bool:
    row = await (await conn.execute(_TRY_SETUP_LOCK, (SETUP_LOCK,))).fetchone()
    return bool(row and row["got"])


@contextmanager
def connection_of(saver: PostgresSaver) -> Iterator[psycopg.Connection[Any]]:
    """The saver's connection (or one of its pool's), held under the saver's lock."""
    conn = saver.conn
    if isinstance(conn, psycopg.Connection):
        with saver.lock, nullcontext(conn) as held:
            yield held
    else:  # a pool
        with saver.lock, conn.connection() as held:
            yield held


class PostgresCheckpointStore:
    """What pruning and status need from a PostgreSQL checkpoint database."""

    backend = "postgres"
    trim_strategy = "keep_latest (PostgresSaver.prune keeps the latest checkpoint per namespace)"

    def __init__(self, saver: PostgresSaver) -> None:
        self.saver = saver

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        with connection_of(self.saver) as conn, conn.cursor(row_factory=dict_row) as cur:
            cur.execute(sql, params)
            return list(cur.fetchall())

    def thread_counts(self) -> dict[str, int]:
        """Checkpoints per thread, all namespaces together."""
        rows = self._rows("SELECT thread_id, count(*) AS n FROM checkpoints GROUP BY thread_id")
        return {str(r["thread_id"]): int(r["n"]) for r in rows}

    def namespace_max(self, thread_id: str) -> int:
        """The most checkpoints any one namespace of the thread has."""
        rows = self._rows(
            "SELECT count(*) AS n FROM checkpoints WHERE thread_id = %s GROUP BY checkpoint_ns",
            (thread_id,),
        )
        return max((int(r["n"]) for r in rows), default=0)

    def uses_delta_channel(self, thread_id: str) -> bool:
        """Whether ``keep_latest`` would refuse the thread."""
        rows = self._rows(
            "SELECT 1 FROM checkpoints WHERE thread_id = %s AND (metadata ? "
            "'counters_since_delta_snapshot' OR metadata ? 'delta_writes_versioned') LIMIT 1",
            (thread_id,),
        )
        return bool(rows)

    def delete_threads(self, thread_ids: Sequence[str]) -> None:
        """Remove whole threads with ``prune(strategy="delete")``, with what their runs spent."""
        if thread_ids:
            self.saver.prune(list(thread_ids), strategy="delete")
            forget_threads(self.saver, thread_ids)

    def trim(self, thread_id: str, keep: int) -> None:
        """Cut a thread down with ``prune(strategy="keep_latest")`` (``keep`` cannot apply)."""
        del keep  # the saver keeps exactly the latest checkpoint of each namespace
        self.saver.prune([thread_id], strategy="keep_latest")

    def size_bytes(self) -> int:
        """On-disk size of the checkpoint tables, indexes and TOAST included."""
        rows = self._rows(
            "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) AS n FROM pg_class c "
            "JOIN pg_namespace s ON s.oid = c.relnamespace "
            "WHERE c.relname = ANY(%s) AND c.relkind = 'r' AND s.nspname = current_schema()",
            (list(TABLES),),
        )
        return int(rows[0]["n"]) if rows else 0

    def vacuum(self) -> None:
        """Plain ``VACUUM`` (no exclusive lock; trailing empty pages go back to the OS)."""
        with connection_of(self.saver) as conn:
            for table in TABLES:
                conn.execute(f"VACUUM {table}")  # table names are constants


def postgres_report(url: str) -> dict[str, Any]:
    """Threads, checkpoints and size of a PostgreSQL checkpoint database, creating nothing."""
    with connect(url) as conn:
        store = PostgresCheckpointStore(PostgresSaver(conn))
        created = store._rows("SELECT to_regclass('checkpoints') IS NOT NULL AS present")
        counts = store.thread_counts() if created and created[0]["present"] else {}
        return {
            "backend": "postgres",
            "location": mask_url(url),
            "size_bytes": store.size_bytes(),
            "threads": len(counts),
            "checkpoints": sum(counts.values()),
        }
