"""Chroma maintenance on a real persist directory: vacuum, backup, compaction, the lock."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from multiagent.errors import MultiagentError
from multiagent.persistence._collections import collection_name
from multiagent.persistence._files import FileLock
from multiagent.persistence.embeddings import HashingEmbeddings
from multiagent.persistence.maintenance import ChromaDBMaintenance
from multiagent.persistence.memory import ChromaAgentMemory, memory_lock, open_agent_memory
from multiagent.policies import load_settings

FACTS = [f"Observation {i}: sensor {i % 9} read {i * 7 % 101} units." for i in range(240)]
QUERIES = ["sensor 4 reading", "observation 230", "units read by sensor 8"]


@pytest.fixture
def memory() -> Iterator[ChromaAgentMemory]:
    with open_agent_memory(load_settings(), embeddings="lexical") as opened:
        opened.remember("monitor", FACTS)
        yield opened


def _forget_most(memory: ChromaAgentMemory) -> None:
    collection = memory.client.get_collection(collection_name("monitor"))
    items, _ = memory.export("monitor")
    collection.delete(ids=items.ids[:200])


def _answers(memory: ChromaAgentMemory) -> list[list[str]]:
    return [memory.recall("monitor", q, k=5) for q in QUERIES]


def test_nothing_to_do_on_a_fresh_home() -> None:
    maintenance = ChromaDBMaintenance(load_settings())
    assert maintenance.vacuum().details == {"vacuumed": False, "reason": "no agent memory yet"}
    assert maintenance.backup().details["backed_up"] is False
    assert maintenance.compact().details["compacted"] is False


def test_vacuum_gives_back_the_space_of_deleted_memories(memory: ChromaAgentMemory) -> None:
    _forget_most(memory)
    report = ChromaDBMaintenance(load_settings()).vacuum()
    assert report.operation == "vacuum"
    assert report.details["vacuumed"] is True
    assert report.size_after < report.size_before
    assert report.seconds >= 0
    assert memory.count("monitor") == 40


def test_compaction_rebuilds_and_answers_the_same(memory: ChromaAgentMemory) -> None:
    _forget_most(memory)
    before = _answers(memory)
    report = ChromaDBMaintenance(load_settings()).compact()
    assert report.details["collections"] == {collection_name("monitor"): 40}
    assert len(report.details["orphan_segments_removed"]) >= 1  # the old index files
    assert report.size_after < report.size_before
    assert _answers(memory) == before
    memory.remember("monitor", ["A new observation after compaction."])
    assert memory.count("monitor") == 41


def test_backup_is_a_consistent_copy_with_retention(
    memory: ChromaAgentMemory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MULTIAGENT_MEMORY__BACKUPS_KEPT", "2")
    maintenance = ChromaDBMaintenance(load_settings())
    first = maintenance.backup()
    backup = Path(first.details["backup"])
    assert first.details["backup_bytes"] > 0
    assert first.size_before == first.size_after  # a backup changes nothing it copies
    assert not list(backup.parent.glob(".tmp-*"))
    expected = _answers(memory)
    # the copy opens as a Chroma store of its own and answers the same questions
    with ChromaAgentMemory(
        backup,
        embeddings=HashingEmbeddings(),
        lock=FileLock(backup.parent / "copy.lock"),
    ) as copy:
        assert copy.agents() == ["monitor"]
        assert [copy.recall("monitor", q, k=5) for q in QUERIES] == expected
    second, third = maintenance.backup(), maintenance.backup()
    kept = maintenance.backups()
    assert [str(p) for p in kept] == [second.details["backup"], third.details["backup"]]
    assert third.details["removed"] == [str(backup)]


def test_backup_retention_never_drops_the_backup_just_made_after_the_clock_went_back(
    memory: ChromaAgentMemory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MULTIAGENT_MEMORY__BACKUPS_KEPT", "2")
    maintenance = ChromaDBMaintenance(load_settings())
    ahead = datetime(2027, 5, 1, tzinfo=UTC)  # made while the clock ran a year ahead
    early = [maintenance.backup(now=ahead + timedelta(hours=i)) for i in range(2)]
    now = maintenance.backup(now=datetime(2026, 5, 1, tzinfo=UTC))
    made = Path(now.details["backup"])
    assert maintenance.backups() == [made, Path(early[1].details["backup"])]
    assert now.details["removed"] == [early[0].details["backup"]]
    assert now.details["kept"] == 2


def test_maintenance_never_runs_beside_a_writer(memory: ChromaAgentMemory) -> None:
    lock = memory_lock(load_settings())
    holding, release = threading.Event(), threading.Event()

    def writer() -> None:
        with lock.shared():
            holding.set()
            release.wait(10)

    thread = threading.Thread(target=writer)
    thread.start()
    holding.wait(5)
    try:
        impatient = ChromaDBMaintenance(load_settings(), lock_timeout_s=0.3)
        with pytest.raises(MultiagentError, match="waiting for the exclusive lock"):
            impatient.vacuum()
        patient = ChromaDBMaintenance(load_settings(), lock_timeout_s=10)
        order: list[str] = []

        def let_go() -> None:
            time.sleep(0.3)
            order.append("writer done")
            release.set()

        threading.Thread(target=let_go).start()
        report = patient.backup()
        order.append("backed up")
    finally:
        release.set()
        thread.join()
    assert report.details["backed_up"] is True
    assert order == ["writer done", "backed up"]  # it waited for the writer
