"""The offline embedders: the lexical fallback, the choice between them, the one-time notice."""

from __future__ import annotations

import logging
import math
import subprocess
import sys

import pytest

from multiagent.errors import UsageError
from multiagent.persistence import embeddings
from multiagent.persistence.embeddings import HashingEmbeddings, load_embeddings


def _cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


def test_lexical_vectors_are_unit_length_and_deterministic_across_processes() -> None:
    embedder = HashingEmbeddings()
    vector = embedder.embed_query("Paris is the capital of France")
    assert len(vector) == 512
    assert math.isclose(math.sqrt(sum(x * x for x in vector)), 1.0, rel_tol=1e-9)
    # Python's hash() is salted per process; the embedder must not depend on it
    code = (
        "from multiagent.persistence.embeddings import HashingEmbeddings;"
        "print(HashingEmbeddings().embed_query('Paris is the capital of France')[:8])"
    )
    other = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert other.strip() == str(vector[:8])


def test_lexical_similarity_follows_shared_words() -> None:
    embedder = HashingEmbeddings()
    query = embedder.embed_query("capital city of France")
    near = embedder.embed_query("Paris is the capital of France")
    far = embedder.embed_query("Quarterly revenue grew by eight percent")
    assert _cosine(query, near) > _cosine(query, far) + 0.2
    assert embedder.embed_documents(["", "x"])[0][0] == 1.0  # empty text: still a unit vector


def test_unknown_embedder_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="unknown embedder 'openai'; valid: auto, minilm"):
        load_embeddings("openai")


def test_lexical_fallback_is_announced_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(embeddings, "_cache", {})
    monkeypatch.setattr(embeddings, "_announced", False)
    monkeypatch.setattr(embeddings, "minilm_model_path", lambda: None)
    with caplog.at_level(logging.WARNING, logger="multiagent.persistence.embeddings"):
        first = load_embeddings("auto")
        monkeypatch.setattr(embeddings, "_cache", {})
        second = load_embeddings("auto")
    assert isinstance(first, HashingEmbeddings)
    assert isinstance(second, HashingEmbeddings)
    notices = [r for r in caplog.records if "lexical hashing embedder" in r.getMessage()]
    assert len(notices) == 1
    with pytest.raises(UsageError, match="embedder 'minilm' is not installed"):
        load_embeddings("minilm")


def test_chroma_default_embedding_function_is_never_configured(isolated_env: object) -> None:
    from multiagent.persistence.memory import open_agent_memory
    from multiagent.policies import load_settings

    with open_agent_memory(load_settings(), embeddings="lexical") as memory:
        memory.remember("scout", ["a fact"])
        (collection,) = memory.client.list_collections()
        assert collection.configuration.get("embedding_function") is None
