"""Agent memory opened on a background thread: same answers, errors where memory is used."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from langchain_core.embeddings import Embeddings
from typer.testing import CliRunner

from multiagent.cli import app
from multiagent.errors import UsageError
from multiagent.persistence import memory_background
from multiagent.persistence.embeddings import HashingEmbeddings
from multiagent.persistence.memory import AgentMemory, open_agent_memory
from multiagent.persistence.memory_background import (
    BackgroundAgentMemory,
    open_agent_memory_in_background,
)
from multiagent.policies import Settings, load_settings

TASK = "Plan a product launch for a small bakery"
FACTS = ["Paris is the capital of France.", "Berlin is the capital of Germany."]


def test_it_remembers_and_recalls_like_the_store_it_opens(isolated_env: Path) -> None:
    with open_agent_memory_in_background(load_settings(), embeddings="lexical") as memory:
        assert isinstance(memory, AgentMemory)
        assert isinstance(memory.embeddings, HashingEmbeddings)
        memory.remember("scout", FACTS, metadata={"thread_id": "run-1"})
        # queued, written by the thread: a recall waits for this process's pending writes
        assert memory.recall("scout", "capital of France", k=1) == [FACTS[0]]
        assert memory.opened
    with open_agent_memory(load_settings(), embeddings="lexical") as reopened:
        assert reopened.count("scout") == 2  # on disk, not only in the thread's client


def test_a_new_home_opens_its_store_only_when_a_note_comes(isolated_env: Path) -> None:
    # nothing to recall in a new home: Chroma is not opened while the run starts
    memory = BackgroundAgentMemory(load_settings(), embeddings=HashingEmbeddings())
    assert memory.recall("scout", "capital of France") == []
    assert not memory.opened
    assert not (isolated_env / "chroma").exists()
    memory.remember("scout", FACTS)  # the first note opens it
    assert memory.recall("scout", "capital of France", k=1) == [FACTS[0]]
    assert memory.opened
    memory.close()
    # a store with notes opens at once: the agents will recall from it
    again = BackgroundAgentMemory(load_settings(), embeddings=HashingEmbeddings())
    again.wait()
    assert again.opened
    again.close()


def test_a_store_never_needed_is_never_opened(isolated_env: Path) -> None:
    memory = BackgroundAgentMemory(load_settings(), embeddings=HashingEmbeddings())
    memory.close()
    assert not memory.opened
    assert not memory._thread.is_alive()
    assert not (isolated_env / "chroma").exists()


def test_bad_options_fail_before_any_thread_or_file(isolated_env: Path) -> None:
    with pytest.raises(UsageError, match="unknown embedder 'brain'"):
        open_agent_memory_in_background(load_settings(), embeddings="brain")
    assert not (isolated_env / "chroma").exists()


def test_a_store_that_cannot_open_fails_where_memory_is_used(
    isolated_env: Path, caplog: pytest.LogCaptureFixture
) -> None:
    isolated_env.mkdir(parents=True)
    (isolated_env / "chroma").write_text("not a directory")  # Chroma cannot open it
    memory = BackgroundAgentMemory(load_settings(), embeddings=HashingEmbeddings())
    with pytest.raises(Exception, match="exists"):
        memory.recall("scout", "anything")
    assert not memory.opened
    memory.close()  # already reported: closes quietly

    unused = BackgroundAgentMemory(load_settings(), embeddings=HashingEmbeddings())
    with caplog.at_level(logging.WARNING, logger="multiagent.persistence.memory"):
        unused.close()  # never used: the run did not need it, a warning says what happened
    assert any("could not be opened" in r.getMessage() for r in caplog.records)


def test_the_cli_remembers_in_one_run_and_recalls_in_the_next(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened: list[BackgroundAgentMemory] = []

    def spy(settings: Settings, *, embeddings: Embeddings | str = "auto") -> BackgroundAgentMemory:
        opened.append(open_agent_memory_in_background(settings, embeddings=embeddings))
        return opened[-1]

    # the CLI opens memory in the background: Chroma's import overlaps the planner's call
    monkeypatch.setattr(memory_background, "open_agent_memory_in_background", spy)
    runner = CliRunner()
    args = ["run", TASK, "--agents", "researcher", "--json", "--memory", "lexical"]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    with open_agent_memory(load_settings(), embeddings="lexical") as memory:
        assert memory.count("researcher") == 1
        (note,) = memory.recall("researcher", TASK, k=3)
    second = runner.invoke(app, args)
    assert second.exit_code == 0, second.output
    # the simulated model answers from its prompt: the recalled note changes the answer
    first_text = json.loads(first.stdout)["contributions"][0]["text"]
    second_text = json.loads(second.stdout)["contributions"][0]["text"]
    assert first_text != second_text
    assert note.startswith(TASK)
    with open_agent_memory(load_settings(), embeddings="lexical") as memory:
        assert memory.count("researcher") == 2
    assert len(opened) == 2
    assert all(not m._thread.is_alive() for m in opened)  # closed at the end of each run
