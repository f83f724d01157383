"""Encryption at rest: checkpoints (SQLite and PostgreSQL), snapshots, backups, key rotation.

Every test writes a marker string through the real stores and then reads the raw bytes back
(every SQLite cell, every PostgreSQL row as text, every file): with a key the marker is nowhere;
with the right key everything reads back; with no key or the wrong one the answer is one line.
"""

from __future__ import annotations

import base64
import json
import operator
import sqlite3
from pathlib import Path
from typing import Annotated, Any

import pytest
from langgraph.graph import END, START, StateGraph
from typer.testing import CliRunner
from typing_extensions import TypedDict

from multiagent.cli import app
from multiagent.errors import UsageError
from multiagent.persistence.checkpointer import checkpoint_path, open_checkpointer
from multiagent.persistence.crypto import DataKey, is_sealed, parse_key
from multiagent.persistence.maintenance import ChromaDBMaintenance, decrypt_backup
from multiagent.persistence.memory import open_agent_memory
from multiagent.persistence.snapshots import MemorySnapshot
from multiagent.policies import load_settings

MARKER = "zebra-umbrella-4471"
runner = CliRunner()


class State(TypedDict):
    task: str
    count: int
    log: Annotated[list[str], operator.add]


def _graph() -> StateGraph[State]:
    graph = StateGraph(State)
    graph.add_node("work", lambda s: {"log": [f"did {s['task']}"], "count": s["count"] + 1})
    graph.add_edge(START, "work")
    graph.add_edge("work", END)
    return graph


def _use_key(monkeypatch: pytest.MonkeyPatch, key: DataKey | None) -> None:
    if key is None:
        monkeypatch.delenv("MULTIAGENT_ENCRYPTION_KEY", raising=False)
    else:
        monkeypatch.setenv("MULTIAGENT_ENCRYPTION_KEY", key.as_text())


def _run_thread(thread: str = "t-1") -> dict[str, Any]:
    with open_checkpointer(load_settings()) as saver:
        app_ = _graph().compile(checkpointer=saver)
        return dict(app_.invoke({"task": MARKER, "count": 1, "log": []}, _config(thread)))


def _config(thread: str) -> Any:
    return {"configurable": {"thread_id": thread}}


def _state(thread: str = "t-1") -> dict[str, Any]:
    with open_checkpointer(load_settings()) as saver:
        return dict(_graph().compile(checkpointer=saver).get_state(_config(thread)).values)


def _sqlite_cells(db: Path) -> bytes:
    """Every cell of every table, as bytes."""
    conn = sqlite3.connect(db)
    try:
        out = bytearray()
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        for table in tables:
            for row in conn.execute(f'SELECT * FROM "{table}"'):
                for cell in row:
                    out += cell if isinstance(cell, bytes) else str(cell).encode()
        return bytes(out)
    finally:
        conn.close()


@pytest.fixture
def key_a() -> DataKey:
    return DataKey.generate()


@pytest.fixture
def key_b() -> DataKey:
    return DataKey.generate()


def test_keys_are_read_as_hex_or_base64_and_bad_ones_are_named_not_echoed() -> None:
    key = DataKey.generate()
    assert parse_key(key.as_text(), source="x").key_id == key.key_id
    assert parse_key(base64.b64encode(key.secret).decode(), source="x").key_id == key.key_id
    assert parse_key(base64.urlsafe_b64encode(key.secret), source="x").key_id == key.key_id
    assert parse_key(key.secret, source="x").key_id == key.key_id  # raw bytes in a key file
    with pytest.raises(UsageError, match=r"^MULTIAGENT_ENCRYPTION_KEY is not a 32-byte key"):
        parse_key("not-a-secret-value", source="MULTIAGENT_ENCRYPTION_KEY")
    with pytest.raises(UsageError) as caught:
        parse_key("topsecret" * 3, source="k")
    assert "topsecret" not in str(caught.value)


def test_sqlite_checkpoints_are_sealed_and_read_back_with_the_key(
    monkeypatch: pytest.MonkeyPatch, key_a: DataKey, key_b: DataKey
) -> None:
    _use_key(monkeypatch, key_a)
    result = _run_thread()
    assert result["log"] == [f"did {MARKER}"]
    db = checkpoint_path(load_settings())
    cells = _sqlite_cells(db)
    assert MARKER.encode() not in cells
    assert f"aesgcm-{key_a.key_id}".encode() in cells
    assert _state()["task"] == MARKER

    _use_key(monkeypatch, None)
    with pytest.raises(UsageError, match=f"encrypted \\(key id {key_a.key_id}\\) and no key"):
        _state()
    _use_key(monkeypatch, key_b)
    with pytest.raises(UsageError, match=f"with key id {key_a.key_id}, not with the configured"):
        _state()


def test_without_a_key_checkpoints_stay_plaintext_as_before() -> None:
    _run_thread()
    cells = _sqlite_cells(checkpoint_path(load_settings()))
    assert b"aesgcm-" not in cells
    assert _state()["task"] == MARKER


def test_a_wrong_key_is_one_line_exit_2_on_the_command_line(
    monkeypatch: pytest.MonkeyPatch, key_a: DataKey, key_b: DataKey
) -> None:
    _use_key(monkeypatch, key_a)
    _run_thread()
    _use_key(monkeypatch, key_b)
    result = runner.invoke(app, ["threads", "show", "t-1"])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert key_a.key_id in lines[0]
    assert "Traceback" not in result.output


def _postgres_text(url: str) -> bytes:
    import psycopg

    out = bytearray()
    with psycopg.connect(url) as conn:
        for table in ("checkpoints", "checkpoint_blobs", "checkpoint_writes"):
            for row in conn.execute(f"SELECT * FROM {table}"):
                for cell in row:
                    out += cell if isinstance(cell, bytes) else str(cell).encode()
    return bytes(out)


@pytest.mark.postgres
def test_postgres_checkpoints_hold_no_value_in_the_clear_and_rotate(
    monkeypatch: pytest.MonkeyPatch,
    postgres_url: str,
    key_a: DataKey,
    key_b: DataKey,
    tmp_path: Path,
) -> None:
    _use_key(monkeypatch, key_a)
    _run_thread()
    raw = _postgres_text(postgres_url)
    assert MARKER.encode() not in raw  # not even the inline primitive channels
    assert _state() == {"task": MARKER, "count": 2, "log": [f"did {MARKER}"]}

    new_key = tmp_path / "new.key"
    new_key.write_text(key_b.as_text())
    result = runner.invoke(app, ["persistence", "rotate-key", "--new-key-file", str(new_key)])
    assert result.exit_code == 0, result.output
    _use_key(monkeypatch, key_b)
    assert _state()["task"] == MARKER
    assert f"aesgcm-{key_a.key_id}".encode() not in _postgres_text(postgres_url)
    _use_key(monkeypatch, key_a)
    with pytest.raises(UsageError, match=key_b.key_id):
        _state()


def _seed_memory() -> None:
    with open_agent_memory(load_settings(), embeddings="lexical") as memory:
        memory.remember("researcher", [f"the code is {MARKER}"], metadata={"thread_id": "t-1"})


def test_snapshots_are_sealed_listed_and_restored_only_with_the_key(
    monkeypatch: pytest.MonkeyPatch, key_a: DataKey, key_b: DataKey
) -> None:
    _use_key(monkeypatch, key_a)
    _seed_memory()
    with MemorySnapshot(load_settings()) as snapper:
        info = snapper.take("researcher")
        assert [s.item_count for s in snapper.list_snapshots()] == [1]
    data = info.path.read_bytes()
    assert is_sealed(data)
    assert MARKER.encode() not in data
    _use_key(monkeypatch, key_b)
    result = runner.invoke(app, ["persistence", "restore", str(info.path)])
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1
    assert key_a.key_id in result.stderr
    _use_key(monkeypatch, key_a)
    result = runner.invoke(app, ["persistence", "restore", str(info.path), "--json"])
    assert result.exit_code == 0, result.output


def test_status_without_the_key_lists_a_sealed_snapshot_as_unreadable_not_as_none(
    monkeypatch: pytest.MonkeyPatch, key_a: DataKey
) -> None:
    _use_key(monkeypatch, key_a)
    _seed_memory()
    with MemorySnapshot(load_settings()) as snapper:
        info = snapper.take("researcher")
    _use_key(monkeypatch, None)
    result = runner.invoke(app, ["persistence", "status", "--json"])
    assert result.exit_code == 0, result.output
    snapshots = json.loads(result.stdout)["snapshots"]
    assert snapshots["agents"] == {}
    [unreadable] = snapshots["unreadable"]
    assert unreadable["path"] == str(info.path)
    assert unreadable["size_bytes"] == info.size_bytes
    assert key_a.key_id in unreadable["error"]
    shown = runner.invoke(app, ["persistence", "status"])
    assert shown.exit_code == 0, shown.output
    assert key_a.key_id in shown.stdout


def test_backups_are_sealed_file_by_file_and_decrypt_to_a_sound_store(
    monkeypatch: pytest.MonkeyPatch, key_a: DataKey, tmp_path: Path
) -> None:
    _use_key(monkeypatch, key_a)
    _seed_memory()
    report = ChromaDBMaintenance(load_settings()).backup()
    backup = Path(report.details["backup"])
    files = sorted(p for p in backup.rglob("*") if p.is_file())
    assert files
    assert all(is_sealed(p.read_bytes()) for p in files)
    plain = tmp_path / "restored"
    assert decrypt_backup(backup, plain) == len(files)
    conn = sqlite3.connect(plain / "chroma.sqlite3")
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        docs = [r[0] for r in conn.execute("SELECT string_value FROM embedding_metadata")]
    finally:
        conn.close()
    assert any(MARKER in str(d) for d in docs)


def _plaintexts(monkeypatch: pytest.MonkeyPatch, key: DataKey) -> dict[str, bytes]:
    """Every stored thing decrypted with ``key``: the bytes rotation must not change."""
    from multiagent.persistence.crypto import Keyring

    ring = Keyring(key)
    settings = load_settings()
    home = settings.home
    found: dict[str, bytes] = {}
    for path in sorted((home / "snapshots").rglob("*.json.gz")):
        found[str(path)] = ring.open(path.read_bytes(), what="snapshot")
    for path in sorted((home / "backups").rglob("*")):
        if path.is_file():
            found[str(path)] = ring.open(path.read_bytes(), what="backup")
    _use_key(monkeypatch, key)
    found["state"] = repr(_state()).encode()
    return found


def test_rotate_key_reseals_everything_without_losing_a_byte(
    monkeypatch: pytest.MonkeyPatch, key_a: DataKey, key_b: DataKey, tmp_path: Path
) -> None:
    _use_key(monkeypatch, key_a)
    _run_thread()
    _seed_memory()
    with MemorySnapshot(load_settings()) as snapper:
        snapper.take("researcher")
    ChromaDBMaintenance(load_settings()).backup()
    before = _plaintexts(monkeypatch, key_a)

    new_key = tmp_path / "new.key"
    new_key.write_text(key_b.as_text())
    result = runner.invoke(
        app, ["persistence", "rotate-key", "--new-key-file", str(new_key), "--json"]
    )
    assert result.exit_code == 0, result.output
    assert f"aesgcm-{key_a.key_id}".encode() not in _sqlite_cells(checkpoint_path(load_settings()))
    assert _plaintexts(monkeypatch, key_b) == before
    with pytest.raises(UsageError, match=key_b.key_id):
        _plaintexts(monkeypatch, key_a)
    # a second run finds everything done
    _use_key(monkeypatch, key_a)
    again = runner.invoke(
        app, ["persistence", "rotate-key", "--new-key-file", str(new_key), "--json"]
    )
    assert again.exit_code == 0, again.output
    report = json.loads(again.stdout)
    assert report["rotated"] == {"checkpoints": 0, "snapshots": 0, "backups": 0}
    assert report["already"]["checkpoints"] > 0
    assert report["already"]["snapshots"] == 1


def test_rotate_key_encrypts_plaintext_data_and_refuses_unknown_keys(
    monkeypatch: pytest.MonkeyPatch, key_a: DataKey, key_b: DataKey, tmp_path: Path
) -> None:
    _run_thread()  # no key: plaintext
    monkeypatch.setenv("MULTIAGENT_NEW_ENCRYPTION_KEY", key_a.as_text())
    assert runner.invoke(app, ["persistence", "rotate-key"]).exit_code == 0
    db = checkpoint_path(load_settings())
    assert MARKER.encode() not in _sqlite_cells(db)
    digest = _sqlite_cells(db)
    # data sealed with key A, old key not given, new key B: refused, nothing changed
    monkeypatch.setenv("MULTIAGENT_NEW_ENCRYPTION_KEY", key_b.as_text())
    result = runner.invoke(app, ["persistence", "rotate-key"])
    assert result.exit_code == 2
    assert key_a.key_id in result.stderr
    assert result.stderr.count("\n") == 1
    assert _sqlite_cells(db) == digest
    monkeypatch.delenv("MULTIAGENT_NEW_ENCRYPTION_KEY")
    result = runner.invoke(app, ["persistence", "rotate-key"])
    assert result.exit_code == 2
    assert "--new-key-file" in result.stderr


def test_a_real_run_leaves_no_task_text_in_the_checkpoint_database(
    monkeypatch: pytest.MonkeyPatch, key_a: DataKey
) -> None:
    _use_key(monkeypatch, key_a)
    result = runner.invoke(app, ["run", f"plan the {MARKER} launch", "--no-stream", "--json"])
    assert result.exit_code == 0, result.output
    cells = _sqlite_cells(checkpoint_path(load_settings()))
    assert MARKER.encode() not in cells  # values sealed, the subject left out of metadata
    listed = runner.invoke(app, ["threads", "list", "--json"])
    assert MARKER in listed.stdout  # the listing still shows it, read from the values
