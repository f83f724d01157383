"""SIGKILL mid-write leaves the previous good state readable: snapshot, backup, prune,
compaction, metrics persistence and key rotation; Ctrl-C mid-compaction or mid-restore leaves
memory as it was and says so.

Each test runs the real command in a subprocess with ``MULTIAGENT_CRASH_POINT`` naming the
critical point (after the new bytes are written, before they are published or committed); the
process parks there and creates a marker file, the test waits for the marker and kills it. So
the kill lands mid-write every time, and nothing depends on timing.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from langgraph.graph import END, START, StateGraph
from typer.testing import CliRunner
from typing_extensions import TypedDict

from multiagent.cli import app
from multiagent.persistence.checkpointer import checkpoint_path, open_checkpointer
from multiagent.persistence.crypto import DataKey, Keyring, checkpoint_key_id, sealed_key_id
from multiagent.persistence.maintenance import ChromaDBMaintenance, backup_files
from multiagent.persistence.memory import open_agent_memory, open_memory_store
from multiagent.persistence.snapshots import MemorySnapshot
from multiagent.policies import load_settings
from tests._procs import park_at

pytestmark = pytest.mark.slow
runner = CliRunner()
FACTS = [f"Fact {i}: item {i} is kept in drawer {i}." for i in range(12)]


def kill_at(point: str, *args: str, tmp_path: Path, env: dict[str, str] | None = None) -> None:
    """Run ``multiagent ARGS`` until it parks at ``point``, then SIGKILL it."""
    child = park_at(point, *args, tmp_path=tmp_path, env=env)
    try:
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(timeout=60) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        assert child.stderr is not None
        child.stderr.close()


def interrupt_at(point: str, *args: str, tmp_path: Path) -> tuple[int, str]:
    """Run ``multiagent ARGS`` until it parks at ``point``, press Ctrl-C (SIGINT) once, and
    return its exit code and stderr."""
    child = park_at(point, *args, tmp_path=tmp_path)
    try:
        child.send_signal(signal.SIGINT)
        _out, err = child.communicate(timeout=120)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    return child.returncode, err.decode()


def _seed_memory() -> None:
    with open_agent_memory(load_settings(), embeddings="lexical") as memory:
        memory.remember("researcher", FACTS[:8], metadata={"thread_id": "t-1"})
        memory.remember("critic", FACTS[8:], metadata={"thread_id": "t-2"})


def _memory_contents() -> dict[str, Any]:
    with open_memory_store(load_settings()) as store:
        out = {}
        for agent in store.agents():
            items, _ = store.export(agent)
            out[agent] = sorted(zip(items.ids, items.documents, strict=True))
        return out


def _integrity(db: Path) -> str:
    conn = sqlite3.connect(db)
    try:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        conn.close()


def test_snapshot_killed_before_its_rename_leaves_the_previous_one(tmp_path: Path) -> None:
    _seed_memory()
    with MemorySnapshot(load_settings()) as snapper:
        first = snapper.take("researcher")
    kill_at("atomic-write", "persistence", "snapshot", "--agent", "researcher", tmp_path=tmp_path)
    with MemorySnapshot(load_settings()) as snapper:
        assert [s.path for s in snapper.list_snapshots()] == [first.path]
        header, items = snapper.load(first.path)
        assert header["item_count"] == 8
        assert sorted(items.documents) == sorted(FACTS[:8])
        assert snapper.take("researcher").item_count == 8  # and the next one works


def test_backup_killed_before_publishing_leaves_the_previous_backups(tmp_path: Path) -> None:
    _seed_memory()
    first = Path(ChromaDBMaintenance(load_settings()).backup().details["backup"])
    kill_at("backup-publish", "persistence", "backup", tmp_path=tmp_path)
    maintenance = ChromaDBMaintenance(load_settings())
    assert maintenance.backups() == [first]
    assert _integrity(first / "chroma.sqlite3") == "ok"
    assert any(p.name.startswith(".tmp-") for p in first.parent.iterdir())  # the half copy
    report = maintenance.backup()
    assert report.details["backed_up"] is True
    assert not any(p.name.startswith(".tmp-") for p in first.parent.iterdir())  # swept


class Counter(TypedDict):
    n: int


def _checkpoints(thread: str = "t-many", runs: int = 6) -> None:
    graph = StateGraph(Counter)
    graph.add_node("inc", lambda s: {"n": s["n"] + 1})
    graph.add_edge(START, "inc")
    graph.add_edge("inc", END)
    with open_checkpointer(load_settings()) as saver:
        compiled = graph.compile(checkpointer=saver)
        for _ in range(runs):
            compiled.invoke({"n": 0}, {"configurable": {"thread_id": thread}})


def _checkpoint_rows() -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(checkpoint_path(load_settings()))
    try:
        return conn.execute("SELECT * FROM checkpoints ORDER BY checkpoint_id").fetchall()
    finally:
        conn.close()


def test_prune_killed_inside_its_transaction_changes_nothing(tmp_path: Path) -> None:
    _checkpoints()
    before = _checkpoint_rows()
    assert len(before) > 2
    kill_at("prune", "persistence", "prune", "--keep", "1", tmp_path=tmp_path)
    assert _checkpoint_rows() == before
    assert _integrity(checkpoint_path(load_settings())) == "ok"
    result = runner.invoke(app, ["persistence", "prune", "--keep", "1", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["checkpoints_after"] < len(before)


def test_compaction_killed_half_way_loses_no_memory(tmp_path: Path) -> None:
    _seed_memory()
    before = _memory_contents()
    kill_at("compact", "persistence", "compact", tmp_path=tmp_path)
    assert _memory_contents() == before
    assert runner.invoke(app, ["persistence", "compact", "--json"]).exit_code == 0
    assert _memory_contents() == before


def _staging_collections() -> list[str]:
    """Rebuilds left half-done (read without opening agent memory, which would settle them)."""
    result = runner.invoke(app, ["persistence", "status", "--json"])
    assert result.exit_code == 0, result.output
    staging: list[str] = json.loads(result.stdout)["memory"]["staging"]
    return staging


def test_compaction_interrupted_half_way_says_memory_is_as_before(tmp_path: Path) -> None:
    _seed_memory()
    before = _memory_contents()
    code, err = interrupt_at("compact", "persistence", "compact", tmp_path=tmp_path)
    assert code == 130
    assert err == (
        "interrupted: compaction stopped part-way; agent memory holds what it held before, "
        "no item lost or half-written\n"
    )
    assert _staging_collections() == []
    assert _memory_contents() == before


def test_restore_interrupted_before_its_swap_says_nothing_was_restored(tmp_path: Path) -> None:
    _seed_memory()
    with MemorySnapshot(load_settings()) as snapper:
        taken = snapper.take("researcher")
    with open_agent_memory(load_settings(), embeddings="lexical") as memory:
        memory.remember("researcher", ["A fact learned after the snapshot."])
    before = _memory_contents()
    code, err = interrupt_at(
        "rebuild-swap", "persistence", "restore", str(taken.path), tmp_path=tmp_path
    )
    assert code == 130
    assert err == "interrupted: nothing was restored; agent memory is as it was before\n"
    assert _staging_collections() == []  # the filled copy was dropped, not left to settle
    assert _memory_contents() == before


def _persisted_totals() -> list[tuple[Any, ...]]:
    db = load_settings().home / "metrics.sqlite"
    conn = sqlite3.connect(db)
    try:
        return conn.execute(
            "SELECT name, labels, value FROM totals ORDER BY name, labels"
        ).fetchall()
    finally:
        conn.close()


def test_metrics_persistence_killed_before_commit_keeps_the_previous_totals(
    tmp_path: Path,
) -> None:
    task = ["run", "Plan a product launch", "--no-stream", "--memory", "off"]
    assert runner.invoke(app, task).exit_code == 0
    before = _persisted_totals()
    assert before
    kill_at("metrics-commit", *task, tmp_path=tmp_path)
    assert _persisted_totals() == before
    assert _integrity(load_settings().home / "metrics.sqlite") == "ok"


def _opened(keyring: Keyring) -> dict[str, bytes]:
    """Every snapshot and backup file, decrypted; and the thread's state."""
    home = load_settings().home
    files = sorted((home / "snapshots").rglob("*.json.gz"))
    files += [f for b in sorted((home / "backups").glob("chroma-*")) for f in backup_files(b)]
    out = {str(p): keyring.open(p.read_bytes(), what=str(p)) for p in files}
    with open_checkpointer(load_settings(), keyring=keyring) as saver:
        for thread in ("t-many", "t-other"):
            state = saver.get_tuple({"configurable": {"thread_id": thread}})
            assert state is not None
            out[thread] = json.dumps(state.checkpoint["channel_values"], sort_keys=True).encode()
    return out


def _key_ids() -> list[str | None]:
    home = load_settings().home
    rows = [r[0] for r in _checkpoint_rows_typed()]
    files = [
        p
        for p in home.rglob("*")
        if p.is_file() and ("snapshots" in p.parts or "backups" in p.parts)
    ]
    return [checkpoint_key_id(t) for t in rows] + [sealed_key_id(p.read_bytes()) for p in files]


def _checkpoint_rows_typed() -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(checkpoint_path(load_settings()))
    try:
        return conn.execute(
            "SELECT type FROM checkpoints UNION ALL SELECT type FROM writes"
        ).fetchall()
    finally:
        conn.close()


def test_rotation_killed_half_way_resumes_without_losing_a_byte(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old, new = DataKey.generate(), DataKey.generate()
    monkeypatch.setenv("MULTIAGENT_ENCRYPTION_KEY", old.as_text())
    _checkpoints("t-many", runs=40)  # more rows than one batch
    _checkpoints("t-other", runs=2)
    _seed_memory()
    with MemorySnapshot(load_settings()) as snapper:
        snapper.take_all()
    ChromaDBMaintenance(load_settings()).backup()
    before = _opened(Keyring(old))
    key_file = tmp_path / "new.key"
    key_file.write_text(new.as_text())

    kill_at(
        "rotate-key",
        "persistence",
        "rotate-key",
        "--new-key-file",
        str(key_file),
        tmp_path=tmp_path,
    )
    ids = set(_key_ids())
    assert ids == {old.key_id, new.key_id}  # killed half-way: some of each, nothing else
    assert _opened(Keyring(new, also=(old,))) == before  # both keys read everything meanwhile

    result = runner.invoke(
        app, ["persistence", "rotate-key", "--new-key-file", str(key_file), "--json"]
    )
    assert result.exit_code == 0, result.output
    assert set(_key_ids()) == {new.key_id}
    assert _opened(Keyring(new)) == before


def test_a_benchmark_killed_while_writing_its_report_leaves_the_report_whole(
    tmp_path: Path,
) -> None:
    report = tmp_path / "BENCHMARKS.md"
    before = (
        "# Benchmarks\n\n<!-- bench:overhead:start -->\nkept figures\n<!-- bench:overhead:end -->\n"
    )
    report.write_text(before, encoding="utf-8")
    kill_at(
        "atomic-write", "bench", "cache", "--requests", "20", "--report", str(report),
        tmp_path=tmp_path,
    )  # fmt: skip
    assert report.read_text(encoding="utf-8") == before


def test_ctrl_c_in_any_command_says_interrupted(tmp_path: Path) -> None:
    """typer turns a Ctrl-C escaping a command into a silent exit 130: a command without words
    of its own for it (here a backup parked before it publishes) still says so."""
    _seed_memory()
    code, err = interrupt_at("backup-publish", "persistence", "backup", tmp_path=tmp_path)
    assert code == 130
    assert err.strip().splitlines()[-1] == "interrupted"
