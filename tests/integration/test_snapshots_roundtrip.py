"""Memory snapshots: exact round trip, retention, refusal of bad files, crash-safe writes."""

from __future__ import annotations

import gzip
import hashlib
import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from multiagent.errors import UsageError
from multiagent.persistence import _files
from multiagent.persistence._collections import MemoryItems
from multiagent.persistence.memory import ChromaAgentMemory, open_agent_memory
from multiagent.persistence.snapshots import MemorySnapshot, file_digest
from multiagent.policies import load_settings

FACTS = [f"Fact {i}: the {w} is stored in vault {i}." for i, w in enumerate("abcdefghijkl")]
QUERIES = ["vault 3", "where is the e stored", "fact 11", "the l", "nothing like this"]


@pytest.fixture
def memory() -> Iterator[ChromaAgentMemory]:
    with open_agent_memory(load_settings(), embeddings="lexical") as opened:
        opened.remember("researcher", FACTS[:8], metadata={"thread_id": "t-1"})
        opened.remember("researcher", FACTS[8:], metadata={"thread_id": "t-2", "topic": "x"})
        opened.remember("critic", ["Check the sources twice."])
        yield opened


def _answers(memory: ChromaAgentMemory) -> list[list[str]]:
    return [memory.recall("researcher", q, k=4) for q in QUERIES]


def test_snapshot_wipe_restore_gives_identical_results(memory: ChromaAgentMemory) -> None:
    before, items_before = _answers(memory), memory.export("researcher")[0]
    with MemorySnapshot(load_settings(), store=memory) as snapper:
        info = snapper.take("researcher")
        header, _ = snapper.load(info.path)
        memory.wipe("researcher")
        assert memory.recall("researcher", "vault 3") == []
        restored = snapper.restore(info.path)
    assert restored.item_count == 12
    assert restored.agent == "researcher"
    assert _answers(memory) == before
    items_after = memory.export("researcher")[0]
    assert items_after.ids == items_before.ids
    assert items_after.documents == items_before.documents
    assert items_after.metadatas == items_before.metadatas
    # Chroma keeps cosine vectors normalised in float32, so a vector first written from
    # float64 may move in its last bits once; after that a round trip is bit for bit
    drift = max(
        abs(a - b)
        for old, new in zip(items_before.embeddings, items_after.embeddings, strict=True)
        for a, b in zip(old, new, strict=True)
    )
    assert drift < 1e-6
    with MemorySnapshot(load_settings(), store=memory) as snapper:
        again = snapper.take("researcher", now=datetime.now(UTC) + timedelta(seconds=1))
        memory.wipe("researcher")
        snapper.restore(again.path)
    assert memory.export("researcher")[0].embeddings == items_after.embeddings
    assert _answers(memory) == before
    assert memory.recall("critic", "sources") == ["Check the sources twice."]  # untouched
    assert header["schema_version"] == 2
    assert header["item_count"] == 12
    assert header["checksum"].startswith("sha256:")
    assert header["embedder"] == "lexical-hash-v1"


def test_snapshot_holds_the_thread_index(memory: ChromaAgentMemory) -> None:
    with MemorySnapshot(load_settings(), store=memory) as snapper:
        info = snapper.take("researcher")
    document = json.loads(gzip.decompress(info.path.read_bytes()))
    threads = document["payload"]["threads"]
    assert {k: v["items"] for k, v in threads.items()} == {"t-1": 8, "t-2": 4}
    assert list(document)[-1] == "payload"  # header first: listings read only the start


def test_retention_keeps_the_newest_per_agent(
    memory: ChromaAgentMemory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MULTIAGENT_MEMORY__SNAPSHOTS_PER_AGENT", "3")
    settings = load_settings()
    start = datetime(2026, 5, 1, tzinfo=UTC)
    with MemorySnapshot(settings, store=memory) as snapper:
        taken = [snapper.take("researcher", now=start + timedelta(hours=6 * i)) for i in range(5)]
        snapper.take("critic", now=start)
        kept = snapper.files("researcher")
        assert kept == [info.path for info in taken[-3:]]
        assert len(snapper.files("critic")) == 1
        assert [i.created_at for i in snapper.list_snapshots("researcher")] == [
            t.created_at for t in taken[-3:]
        ]


def test_retention_never_drops_the_snapshot_just_taken_after_the_clock_went_back(
    memory: ChromaAgentMemory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MULTIAGENT_MEMORY__SNAPSHOTS_PER_AGENT", "3")
    ahead = datetime(2027, 5, 1, tzinfo=UTC)  # taken while the clock ran a year ahead
    with MemorySnapshot(load_settings(), store=memory) as snapper:
        early = [snapper.take("researcher", now=ahead + timedelta(hours=i)) for i in range(3)]
        now = snapper.take("researcher", now=datetime(2026, 5, 1, tzinfo=UTC))
        assert snapper.files("researcher") == [now.path, early[1].path, early[2].path]
        assert now.path.stat().st_size == now.size_bytes


def _corrupt_variants(good: bytes, tmp: Path) -> dict[str, tuple[Path, str]]:
    raw = json.loads(gzip.decompress(good))
    altered = dict(raw)
    altered["payload"] = {**raw["payload"], "agent": raw["payload"]["agent"]}
    altered["payload"]["items"] = [
        dict(raw["payload"]["items"][0], document="forged"),
        *raw["payload"]["items"][1:],
    ]
    foreign_schema = {**raw, "schema_version": 99}
    # a header field flipped: the checksum covers the header too (schema version 2)
    header_created = {**raw, "created_at": raw["created_at"].replace("20", "19", 1)}
    header_embedder = {**raw, "embedder": "lexical-hash-v2"}
    header_added = {**raw, "agent_note": "restore me elsewhere"}
    downgraded = {**raw, "schema_version": 1}  # read as version 1: the payload's sum differs
    foreign_format = {"format": "someone-else", "rows": []}
    variants = {
        "truncated": (good[: len(good) // 2], "is truncated or not a gzip file"),
        "altered": (gzip.compress(json.dumps(altered).encode()), "fails its checksum"),
        "schema": (gzip.compress(json.dumps(foreign_schema).encode()), "schema version 99"),
        "header-created": (
            gzip.compress(json.dumps(header_created).encode()),
            "fails its checksum",
        ),
        "header-embedder": (
            gzip.compress(json.dumps(header_embedder).encode()),
            "fails its checksum",
        ),
        "header-added": (gzip.compress(json.dumps(header_added).encode()), "fails its checksum"),
        "downgraded": (gzip.compress(json.dumps(downgraded).encode()), "fails its checksum"),
        "foreign": (gzip.compress(json.dumps(foreign_format).encode()), "not a multiagent memory"),
        "not-json": (gzip.compress(b"{nope"), "is not valid JSON"),
    }
    out = {}
    for name, (data, message) in variants.items():
        path = tmp / f"{name}.json.gz"
        path.write_bytes(data)
        out[name] = (path, message)
    return out


def test_bad_snapshots_are_refused_and_nothing_is_overwritten(
    memory: ChromaAgentMemory, tmp_path: Path
) -> None:
    with MemorySnapshot(load_settings(), store=memory) as snapper:
        info = snapper.take("researcher")
        memory.remember("researcher", ["A newer fact learned after the snapshot."])
        before = _answers(memory)
        count = memory.count("researcher")
        for name, (path, message) in _corrupt_variants(info.path.read_bytes(), tmp_path).items():
            with pytest.raises(UsageError, match=message) as caught:
                snapper.restore(path)
            assert "\n" not in str(caught.value), name
            assert memory.count("researcher") == count, name
            assert _answers(memory) == before, name
        with pytest.raises(UsageError, match="does not exist"):
            snapper.restore(tmp_path / "missing.json.gz")


def _version1_snapshot(agent: str, items: MemoryItems, embedder: str | None) -> bytes:
    """A snapshot laid out as schema version 1 wrote it, built here by hand: header keys
    first, a checksum of the payload alone (canonical JSON), the payload last."""
    payload = {
        "agent": agent,
        "items": [
            {"id": i, "document": d, "metadata": m, "embedding": e}
            for i, d, m, e in zip(
                items.ids, items.documents, items.metadatas, items.embeddings, strict=True
            )
        ],
        "threads": {},
    }
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    document = {
        "format": "multiagent.memory-snapshot",
        "schema_version": 1,
        "agent": agent,
        "created_at": "2026-01-02T03:04:05.000006+00:00",
        "item_count": len(items),
        "embedder": embedder,
        "checksum": "sha256:" + hashlib.sha256(canonical.encode("utf-8")).hexdigest(),
        "payload": payload,
    }
    raw = json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return gzip.compress(raw, mtime=0)


def test_a_version_1_snapshot_still_lists_verifies_and_restores(
    memory: ChromaAgentMemory, tmp_path: Path
) -> None:
    before, (items, embedder) = _answers(memory), memory.export("researcher")
    old = tmp_path / "researcher-v1.json.gz"
    old.write_bytes(_version1_snapshot("researcher", items, embedder))
    altered = tmp_path / "researcher-v1-altered.json.gz"
    forged = MemoryItems(
        ids=items.ids,
        documents=["forged", *items.documents[1:]],
        metadatas=items.metadatas,
        embeddings=items.embeddings,
    )
    good = json.loads(gzip.decompress(_version1_snapshot("researcher", items, embedder)))
    bad = json.loads(gzip.decompress(_version1_snapshot("researcher", forged, embedder)))
    altered.write_bytes(gzip.compress(json.dumps({**bad, "checksum": good["checksum"]}).encode()))
    with MemorySnapshot(load_settings(), store=memory) as snapper:
        header, loaded = snapper.load(old)
        assert header["schema_version"] == 1
        assert loaded.ids == items.ids
        with pytest.raises(UsageError, match="fails its checksum"):
            snapper.load(altered)
        memory.wipe("researcher")
        restored = snapper.restore(old)
    assert restored.item_count == len(items)
    assert restored.created_at == "2026-01-02T03:04:05.000006+00:00"
    after = memory.export("researcher")[0]
    assert (after.ids, after.documents, after.metadatas) == (
        items.ids,
        items.documents,
        items.metadatas,
    )
    assert _answers(memory) == before


def test_an_exception_between_write_and_rename_keeps_the_previous_snapshot(
    memory: ChromaAgentMemory, monkeypatch: pytest.MonkeyPatch
) -> None:
    with MemorySnapshot(load_settings(), store=memory) as snapper:
        first = snapper.take("researcher")
        digest = file_digest(first.path)
        memory.remember("researcher", ["Something new."])

        def refuse(*_args: object) -> None:
            raise OSError("power cut")

        monkeypatch.setattr(_files.os, "replace", refuse)
        with pytest.raises(OSError, match="power cut"):
            snapper.take("researcher")
        monkeypatch.undo()
        assert snapper.files("researcher") == [first.path]
        assert file_digest(first.path) == digest
        assert not list(first.path.parent.glob(".tmp-*"))  # the temporary file was removed


KILLER = """
import os, signal, sys
from multiagent.persistence import _files
from multiagent.persistence._collections import MemoryItems
from multiagent.persistence.snapshots import MemorySnapshot
from multiagent.policies import load_settings

def die(*_args):  # the process dies after writing and fsyncing, before the rename
    os.kill(os.getpid(), signal.SIGKILL)

_files.os.replace = die
MemorySnapshot(load_settings()).take("researcher")
"""


def test_a_process_killed_half_way_leaves_the_previous_snapshot_intact(
    memory: ChromaAgentMemory,
) -> None:
    with MemorySnapshot(load_settings(), store=memory) as snapper:
        first = snapper.take("researcher")
        digest = file_digest(first.path)
        memory.remember("researcher", ["Something new."])
        killed = subprocess.run([sys.executable, "-c", KILLER], timeout=120, check=False)
        assert killed.returncode == -9
        leftovers = list(first.path.parent.glob(".tmp-*"))
        assert len(leftovers) == 1  # the half-published file, never under a snapshot name
        assert snapper.files("researcher") == [first.path]
        assert file_digest(first.path) == digest
        assert [i.path for i in snapper.list_snapshots("researcher")] == [first.path]
        # the next snapshot clears temporaries older than an hour, not fresh ones
        snapper.take("researcher")
        assert leftovers[0].exists()
        _files.remove_stale_temporaries(first.path.parent, older_than_s=-1)
        assert not leftovers[0].exists()
        snapper.restore(first.path)  # the previous snapshot still restores
        assert memory.count("researcher") == 12


def test_snapshot_of_an_agent_without_memory_is_a_usage_error(memory: ChromaAgentMemory) -> None:
    with (
        MemorySnapshot(load_settings(), store=memory) as snapper,
        pytest.raises(UsageError, match="agent 'ghost' has no memory to snapshot"),
    ):
        snapper.take("ghost")
