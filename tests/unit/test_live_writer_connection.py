"""The live writer commits through one connection per process, reopened when the file goes."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

from multiagent.observability.live import LiveWriter


def _events(path: Path) -> list[str]:
    with closing(sqlite3.connect(path)) as conn:
        return [row[0] for row in conn.execute("SELECT kind FROM events ORDER BY id")]


def _put(writer: LiveWriter, kind: str) -> None:
    writer.put("INSERT INTO events (at, thread_id, kind) VALUES (?, ?, ?)", (0.0, "t", kind))


def test_flushes_share_one_connection_and_a_removed_file_is_recreated(tmp_path: Path) -> None:
    writer = LiveWriter(tmp_path)
    try:
        _put(writer, "a")
        writer.flush()
        first = writer._conn
        _put(writer, "b")
        writer.flush()
        assert first is not None
        assert writer._conn is first
        assert _events(writer.path) == ["a", "b"]

        for suffix in ("", "-wal", "-shm"):
            Path(f"{writer.path}{suffix}").unlink(missing_ok=True)
        _put(writer, "c")
        writer.flush()
        assert writer._conn is not first
        assert _events(writer.path) == ["c"]
    finally:
        writer.close()
    assert writer._conn is None
