"""Agent memory off the agents' path: recall without Chroma when nothing is stored, writes
queued and batched by the memory thread, Chroma imported lean and asked cheaply."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from multiagent.persistence._chroma_open import has_collection
from multiagent.persistence._collections import collection_name
from multiagent.persistence.embeddings import HashingEmbeddings
from multiagent.persistence.memory import open_agent_memory, open_chroma_client
from multiagent.persistence.memory_background import BackgroundAgentMemory
from multiagent.policies import load_settings
from tests.integration._chroma_probe import run_chroma_probe

NOTES = {
    "scout": "Paris is the capital of France.",
    "critic": "Berlin is the capital of Germany.",
    "writer": "Rome is the capital of Italy.",
}


class HeldEmbeddings(HashingEmbeddings):
    """Lexical embeddings whose ``load`` waits for a test's go, counting embedding passes."""

    def __init__(self) -> None:
        super().__init__()
        self.go = threading.Event()
        self.passes: list[int] = []

    def load(self) -> None:
        assert self.go.wait(timeout=60), "the test never let the store open"

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        self.passes.append(len(texts))
        return super().embed_documents(texts)


def test_recall_of_an_agent_with_nothing_stored_does_not_wait_for_the_store(
    isolated_env: Path,
) -> None:
    embeddings = HeldEmbeddings()
    memory = BackgroundAgentMemory(load_settings(), embeddings=embeddings)
    try:
        assert memory.recall("scout", "capital of France") == []
        assert not memory.opened  # answered from Chroma's files, the store still held
    finally:
        embeddings.go.set()
        memory.close()


def test_a_note_queued_before_the_store_opens_is_recalled_in_the_same_run(
    isolated_env: Path,
) -> None:
    embeddings = HeldEmbeddings()
    with BackgroundAgentMemory(load_settings(), embeddings=embeddings) as memory:
        memory.remember("scout", [NOTES["scout"]], metadata={"thread_id": "t-1"})
        assert not memory.opened  # remember returned with the store still held
        threading.Timer(0.05, embeddings.go.set).start()
        # not on disk yet, but remembered in this process: the recall waits for the write
        assert memory.recall("scout", "capital of France", k=1) == [NOTES["scout"]]


def test_notes_of_several_agents_are_written_in_one_embedding_pass(isolated_env: Path) -> None:
    embeddings = HeldEmbeddings()
    with BackgroundAgentMemory(load_settings(), embeddings=embeddings) as memory:
        for agent, note in NOTES.items():
            memory.remember(agent, [note, note, "  "], metadata={"thread_id": "t-1"})
        embeddings.go.set()
        memory.flush()
        assert embeddings.passes == [3]  # three agents, one pass; repeats and blanks dropped
    with open_agent_memory(load_settings(), embeddings=HashingEmbeddings()) as reopened:
        assert {agent: reopened.count(agent) for agent in NOTES} == dict.fromkeys(NOTES, 1)
        assert reopened.recall("critic", "capital of Germany", k=1) == [NOTES["critic"]]


def test_a_write_that_fails_is_raised_when_the_memory_closes(isolated_env: Path) -> None:
    isolated_env.mkdir(parents=True)
    (isolated_env / "chroma").write_text("not a directory")  # Chroma cannot open it
    memory = BackgroundAgentMemory(load_settings(), embeddings=HashingEmbeddings())
    memory.remember("scout", [NOTES["scout"]])  # queued: the failure comes later
    with pytest.raises(Exception, match="exists"):
        memory.close()


def test_remember_checks_its_arguments_in_the_callers_thread(isolated_env: Path) -> None:
    with BackgroundAgentMemory(load_settings(), embeddings=HashingEmbeddings()) as memory:
        with pytest.raises(Exception, match="invalid memory metadata"):
            memory.remember("scout", ["a note"], metadata={"thread_id": 7})  # type: ignore[dict-item]
        with pytest.raises(Exception, match="invalid agent name"):
            memory.remember(" ", ["a note"])


def test_has_collection_reads_chromas_files(isolated_env: Path, tmp_path: Path) -> None:
    path = tmp_path / "chroma"
    name = collection_name("scout")
    assert has_collection(path, name) is False  # no directory
    path.mkdir()
    assert has_collection(path, name) is False  # no database
    (path / "chroma.sqlite3").write_text("not a database")
    assert has_collection(path, name) is None  # cannot tell: Chroma is asked
    (path / "chroma.sqlite3").unlink()
    client = open_chroma_client(path)
    client.get_or_create_collection(name)
    assert has_collection(path, name) is True
    assert has_collection(path, collection_name("critic")) is False
    client.close()
    file = tmp_path / "file"
    file.write_text("")
    assert has_collection(file, name) is None


def test_has_collection_reads_a_relative_path(isolated_env: Path) -> None:
    # the default home is ./.multiagent: a second run in it recalled the first run's notes
    # through this question, and a relative path has no file URI (a traceback, not an answer)
    path = Path(".multiagent") / "chroma"
    name = collection_name("scout")
    client = open_chroma_client(path)
    client.get_or_create_collection(name)
    client.close()
    assert has_collection(path, name) is True
    assert has_collection(path, collection_name("critic")) is False


_LEAN_PROBE = """
import json, sys
import overrides
checked = overrides.override
from multiagent.persistence._chroma_open import open_persistent_client
client = open_persistent_client(sys.argv[1])
found = client.get_or_create_collection("agent-x", embedding_function=None)
found.upsert(ids=["a"], documents=["a text"], embeddings=[[0.1, 0.2, 0.3]])
answer = found.query(query_embeddings=[[0.1, 0.2, 0.3]], n_results=1)
name = "opentelemetry.exporter.otlp.proto.grpc.trace_exporter"
left = name in sys.modules
functions = "chromadb.utils.embedding_functions"
deferred = functions not in sys.modules
from chromadb.api.collection_configuration import known_embedding_functions
known = "default" in known_embedding_functions
registry_is_real = known_embedding_functions["default"] is (
    sys.modules[functions].known_embedding_functions["default"]
)
from chromadb.telemetry.opentelemetry import OTLPSpanExporter
exporter = OTLPSpanExporter(endpoint="http://127.0.0.1:1")
real = sys.modules[name].OTLPSpanExporter
print(json.dumps({
    "restored": overrides.override is checked,
    "stand_in_left": left,
    "exporter_is_real": type(exporter) is real,
    "answer": answer["ids"],
    "functions_deferred": deferred,
    "registry_answers": known and registry_is_real,
}))
"""


def test_chroma_imports_lean_and_leaves_nothing_of_it_behind(tmp_path: Path) -> None:
    result = run_chroma_probe(_LEAN_PROBE, tmp_path / "chroma")
    assert result == {
        "restored": True,  # overrides' own decorator is back for everyone else
        "stand_in_left": False,  # the next import of the exporter finds the real module
        "exporter_is_real": True,  # Chroma asked for an exporter: it got the real one
        "answer": [["a"]],
        # a collection without an embedding function never reads Chroma's registry, so the
        # package of every provider's function is not imported; asked, the registry is real
        "functions_deferred": True,
        "registry_answers": True,
    }
