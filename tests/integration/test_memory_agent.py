"""Agent memory on a real Chroma persistent store: remembering across runs, per agent."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from multiagent.errors import UsageError
from multiagent.persistence._collections import (
    READY_SUFFIX,
    REBUILD_SUFFIX,
    collection_name,
    export_items,
)
from multiagent.persistence.embeddings import HashingEmbeddings
from multiagent.persistence.memory import AgentMemory, ChromaAgentMemory, open_agent_memory
from multiagent.policies import load_settings

FACTS = [
    "Paris is the capital of France.",
    "The invoice for the new mat is due on Friday.",
    "Berlin is the capital of Germany.",
]


def test_it_satisfies_the_protocol_nodes_code_against() -> None:
    with open_agent_memory(load_settings(), embeddings="lexical") as memory:
        assert isinstance(memory, AgentMemory)


def test_an_agent_remembers_across_runs(isolated_env: Path) -> None:
    # the first "run" is another process: memory must be on disk, not in this process
    code = (
        "from multiagent.persistence.memory import open_agent_memory;"
        "from multiagent.policies import load_settings;"
        "m = open_agent_memory(load_settings(), embeddings='lexical');"
        f"m.remember('researcher', {FACTS!r}, metadata={{'thread_id': 'run-1'}});"
        "m.close()"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
    with open_agent_memory(load_settings(), embeddings="lexical") as memory:
        assert memory.recall("researcher", "What is the capital of France?", k=1) == [FACTS[0]]
        assert memory.count("researcher") == 3
        items, embedder = memory.export("researcher")
        assert embedder == "lexical-hash-v1"
        assert {m["thread_id"] for m in items.metadatas} == {"run-1"}


def test_memories_are_per_agent_and_k_is_respected() -> None:
    with open_agent_memory(load_settings(), embeddings="lexical") as memory:
        memory.remember("researcher", FACTS)
        memory.remember("critic", ["Always check the sources twice."])
        assert memory.agents() == ["critic", "researcher"]
        assert memory.recall("critic", "capital of France", k=5) == [
            "Always check the sources twice."
        ]
        assert len(memory.recall("researcher", "capital", k=2)) == 2
        assert memory.recall("nobody", "capital") == []
        assert memory.recall("researcher", "   ") == []


def test_remembering_the_same_text_twice_keeps_one_copy() -> None:
    with open_agent_memory(load_settings(), embeddings="lexical") as memory:
        memory.remember("researcher", [FACTS[0], FACTS[0], "  "])
        memory.remember("researcher", [FACTS[0]], metadata={"thread_id": "t2"})
        assert memory.count("researcher") == 1
        items, _ = memory.export("researcher")
        assert items.metadatas[0]["thread_id"] == "t2"


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda m: m.recall("researcher", "x", k=0), "invalid k=0 for recall; use k >= 1"),
        (lambda m: m.recall("", "x"), "invalid agent name ''"),
        (lambda m: m.remember("a", ["x"], metadata={"n": 3}), "invalid memory metadata 'n'"),
    ],
)
def test_bad_input_is_a_one_line_usage_error(call: object, message: str) -> None:
    with (
        open_agent_memory(load_settings(), embeddings="lexical") as memory,
        pytest.raises(UsageError, match=message),
    ):
        call(memory)  # type: ignore[operator]


class _OtherEmbedder(HashingEmbeddings):
    name = "lexical-hash-v1-256"

    def __init__(self) -> None:
        super().__init__(dimensions=256)


def test_memory_made_by_another_embedder_is_re_embedded(isolated_env: Path) -> None:
    settings = load_settings()
    with open_agent_memory(settings, embeddings="lexical") as memory:
        memory.remember("researcher", FACTS)
    with open_agent_memory(settings, embeddings=_OtherEmbedder()) as memory:
        assert memory.recall("researcher", "capital of Germany", k=1) == [FACTS[2]]
        items, embedder = memory.export("researcher")
        assert embedder == "lexical-hash-v1-256"
        assert {len(e) for e in items.embeddings} == {256}
        assert sorted(items.documents) == sorted(FACTS)


def test_an_interrupted_rebuild_is_finished_or_discarded_on_open(isolated_env: Path) -> None:
    settings = load_settings()
    name = collection_name("researcher")
    with open_agent_memory(settings, embeddings="lexical") as memory:
        memory.remember("researcher", FACTS)
        original = memory.client.get_collection(name)
        items = export_items(original)
        metadata = dict(original.metadata)
        # a crash while filling: a half-filled staging collection next to the original
        staging = memory.client.create_collection(name + REBUILD_SUFFIX, metadata=metadata)
        staging.add(
            ids=items.ids[:1], documents=items.documents[:1], embeddings=items.embeddings[:1]
        )
        # a crash after deleting the old collection, before renaming the complete new one
        other = collection_name("critic")
        ready = memory.client.create_collection(
            other + READY_SUFFIX, metadata={**metadata, "agent": "critic"}
        )
        ready.add(ids=items.ids, documents=items.documents, embeddings=items.embeddings)
    with ChromaAgentMemory(
        settings.home / "chroma", embeddings=HashingEmbeddings(), lock=memory.lock
    ) as reopened:
        names = {c.name for c in reopened.client.list_collections()}
        assert names == {name, other}
        assert reopened.count("researcher") == 3  # the original, untouched
        assert reopened.count("critic") == 3  # the finished swap
