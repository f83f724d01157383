"""``persistence status`` reads only; what a killed writer leaves is shown and repaired; restore
of a directory and blank batch item ids are one line."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from multiagent.errors import UsageError
from multiagent.persistence.leftovers import STALE_AFTER_S
from multiagent.persistence.memory import open_chroma_client
from tests.badinput.conftest import assert_refused, copy_of, digests, invoke, refused_unchanged

CASES = settings(
    max_examples=10,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def _status(home: Path) -> dict[str, object]:
    outcome = invoke(["persistence", "status", "--json"], home=home)
    assert outcome.exit_code == 0, outcome.stderr
    document: dict[str, object] = json.loads(outcome.stdout)
    return document


def test_persistence_status_leaves_every_byte_of_the_data_directory(filled_home: Path) -> None:
    with copy_of(filled_home) as home:
        before = digests(home)
        assert invoke(["persistence", "status"], home=home).exit_code == 0
        memory = _status(home)["memory"]
        assert digests(home) == before  # opening Chroma's client rewrites its files
        assert isinstance(memory, dict)
        assert set(memory["agents"]) == {"critic", "researcher"}
        client = open_chroma_client(home / "chroma")  # the same counts as Chroma's own
        try:
            counted = {
                (c.metadata or {})["agent"]: c.count()
                for c in client.list_collections()
                if (c.metadata or {}).get("agent")
            }
        finally:
            client.close()
        assert memory["agents"] == counted


def test_status_shows_a_staging_collection_a_killed_restore_left(filled_home: Path) -> None:
    with copy_of(filled_home) as home:
        client = open_chroma_client(home / "chroma")
        try:
            name = next(c.name for c in client.list_collections())
            client.create_collection(f"{name}-rebuild", metadata={"agent": "critic"})
        finally:
            client.close()
        before = digests(home)
        memory = _status(home)["memory"]
        assert isinstance(memory, dict)
        assert memory["staging"] == [f"{name}-rebuild"]
        assert f"collection {name}-rebuild" in invoke(["persistence", "status"], home=home).stdout
        assert digests(home) == before


def _killed_snapshot_write(home: Path, *, age_s: float) -> Path:
    """What ``atomic_write_bytes`` leaves when SIGKILL lands before its rename."""
    directory = home / "snapshots" / "critic"
    directory.mkdir(parents=True, exist_ok=True)
    part = directory / ".tmp-abc123.part"
    part.write_bytes(b"\x1f\x8b" + b"half a snapshot" * 1000)
    stamp = time.time() - age_s
    os.utime(part, (stamp, stamp))
    return part


def test_a_killed_snapshot_write_is_shown_and_repair_removes_it_once_stale(
    filled_home: Path,
) -> None:
    with copy_of(filled_home) as home:
        stale = _killed_snapshot_write(home, age_s=STALE_AFTER_S + 60)
        leftovers = _status(home)["leftovers"]
        assert leftovers == [
            {
                "path": str(stale),
                "size_bytes": stale.stat().st_size,
                "age_s": leftovers[0]["age_s"],  # type: ignore[index]
                "stale": True,
            }
        ]
        text = invoke(["persistence", "status"], home=home)
        assert "left by an interrupted write" in text.stdout
        assert str(stale.name) in text.stdout
        check = invoke(["persistence", "repair", "--check", "--json"], home=home)
        assert check.exit_code == 0, check.stderr
        assert json.loads(check.stdout)["leftovers"][0]["action"] == "would be removed"
        assert stale.exists()
        repaired = invoke(["persistence", "repair"], home=home)
        assert repaired.exit_code == 0, repaired.stderr
        assert "removed" in repaired.stdout
        assert not stale.exists()
        assert _status(home)["leftovers"] == []


def test_repair_keeps_a_temporary_that_may_still_be_written(filled_home: Path) -> None:
    with copy_of(filled_home) as home:
        fresh = _killed_snapshot_write(home, age_s=0)
        repaired = invoke(["persistence", "repair", "--json"], home=home)
        assert repaired.exit_code == 0, repaired.stderr
        assert json.loads(repaired.stdout)["leftovers"][0]["action"].startswith("kept")
        assert fresh.exists()


def test_restore_of_a_directory_says_it_is_a_directory(filled_home: Path, tmp_path: Path) -> None:
    snapshots = tmp_path / "snapshots"
    snapshots.mkdir()
    line = refused_unchanged(
        ["persistence", "restore", str(snapshots)], template=filled_home, needle="is a directory"
    )
    assert "does not exist" not in line


def test_a_refused_restore_creates_no_data_directory(tmp_path: Path) -> None:
    home = tmp_path / "not-yet"
    garbage = tmp_path / "garbage.json.gz"
    garbage.write_bytes(b"not a snapshot")
    outcome = invoke(["persistence", "restore", str(garbage)], home=home)
    assert_refused(outcome, needle="nothing was restored")
    assert not home.exists()


BLANK_OR_CONTROL = st.text(alphabet=" \t\u3000", max_size=4) | st.builds(
    lambda head, c: head + c, st.text(max_size=5), st.sampled_from(["\x00", "\x1b", "\x7f"])
)


@CASES
@given(item_id=BLANK_OR_CONTROL, line=st.integers(1, 4))
def test_a_blank_batch_item_id_is_refused_naming_its_line(
    filled_home: Path, tmp_path: Path, item_id: str, line: int
) -> None:
    rows = [json.dumps({"id": f"item-{n}", "text": f"claim {n}"}) for n in range(1, 5)]
    rows[line - 1] = json.dumps({"id": item_id, "text": "a claim"})
    path = tmp_path / "batch.jsonl"
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    refused_unchanged(
        ["validate", "--batch", str(path)], template=filled_home, needle=f"line {line}"
    )


def test_an_item_without_an_id_is_numbered_by_its_line(tmp_path: Path) -> None:
    path = tmp_path / "batch.jsonl"
    path.write_text('{"text": "water boils at 100 C at sea level"}\n', encoding="utf-8")
    from multiagent.graphs.batch_file import read_batch_file

    assert read_batch_file(path) == [{"id": "1", "text": "water boils at 100 C at sea level"}]


@pytest.mark.parametrize("item_id", ["", "   ", "a\x1bb"])
def test_the_python_api_refuses_a_blank_item_id_like_the_batch_file(item_id: str) -> None:
    from multiagent.graphs.inputs import validation_input
    from multiagent.nodes.agents_file import load_agents
    from multiagent.policies import load_settings

    settings = load_settings()
    with pytest.raises(UsageError, match="item id"):
        validation_input(
            [{"id": item_id, "text": "a claim"}], settings=settings, agents=load_agents(settings)
        )


@pytest.mark.parametrize(
    "record",
    [
        {"version": 1, "scheduler": [], "tasks": {}},
        {"version": 1, "scheduler": {}, "tasks": 5},
        {"version": 1, "scheduler": {"pid": "x"}, "tasks": {"metrics": 5, "backups": []}},
        {"version": 1, "scheduler": {}, "tasks": {"metrics": {"runs": "x", "failures": None}}},
    ],
)
def test_a_scheduler_record_of_the_wrong_shape_is_read_as_empty_like_an_unreadable_one(
    filled_home: Path, record: dict[str, object]
) -> None:
    with copy_of(filled_home) as home:
        (home / "scheduler.json").write_text(json.dumps(record), encoding="utf-8")
        schedule = _status(home)["schedule"]
        assert isinstance(schedule, dict)
        assert isinstance(schedule["scheduler"], dict)
        ran = invoke(["persistence", "scheduler", "--run-now", "metrics", "--json"], home=home)
        assert ran.exit_code == 0, ran.stderr
        assert json.loads(ran.stdout)["task"] == "metrics"
