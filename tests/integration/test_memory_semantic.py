"""With the packaged all-MiniLM-L6-v2 installed, recall is semantic, not lexical."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from langchain_core.embeddings import Embeddings

from multiagent.persistence._collections import MemoryItems
from multiagent.persistence.embeddings import MiniLMEmbeddings, load_embeddings, minilm_model_path
from multiagent.persistence.memory import item_id, open_agent_memory, open_memory_store
from multiagent.policies import load_settings

pytestmark = pytest.mark.skipif(
    minilm_model_path() is None,
    reason='all-MiniLM-L6-v2 is not installed (pip install -e ".[embeddings]")',
)


@pytest.fixture(scope="module")
def minilm() -> Iterator[Embeddings]:
    return load_embeddings("minilm")


def test_auto_picks_the_real_model_when_installed(minilm: Embeddings) -> None:
    assert isinstance(minilm, MiniLMEmbeddings)
    assert load_embeddings("auto") is minilm
    assert len(minilm.embed_query("hello")) == 384


PARAPHRASE = "A kitten was resting on the rug."
# shares "the", "mat" and "on" with the query, and means something else entirely
WORD_TWIN = "The invoice for the new mat is due on Friday."
QUERY = "The cat sat on the mat."


def test_a_paraphrase_ranks_above_an_unrelated_text(isolated_env: Path, minilm: Embeddings) -> None:
    with open_agent_memory(load_settings(), embeddings=minilm) as memory:
        memory.remember("observer", [WORD_TWIN, PARAPHRASE])
        assert memory.recall("observer", QUERY, k=2) == [PARAPHRASE, WORD_TWIN]
        assert memory.recall("observer", "a bill that has to be paid this week", k=1) == [WORD_TWIN]


def test_the_lexical_fallback_ranks_them_the_other_way(isolated_env: Path) -> None:
    # the control: the same question answered by shared words gets the order wrong, so the
    # test above does measure meaning
    with open_agent_memory(load_settings(), embeddings="lexical") as memory:
        memory.remember("observer", [WORD_TWIN, PARAPHRASE])
        assert memory.recall("observer", QUERY, k=2) == [WORD_TWIN, PARAPHRASE]


@pytest.mark.slow
def test_memories_embedded_by_sentence_transformers_stay_valid(
    isolated_env: Path, minilm: Embeddings, caplog: pytest.LogCaptureFixture
) -> None:
    # memories written before the model moved to numpy: same embedder name, torch's vectors
    sentence_transformers = pytest.importorskip("sentence_transformers")
    reference = sentence_transformers.SentenceTransformer(
        str(minilm_model_path()), device="cpu", local_files_only=True
    )
    texts = [WORD_TWIN, PARAPHRASE]
    vectors = reference.encode(texts, normalize_embeddings=True, show_progress_bar=False)
    items = MemoryItems(
        ids=[item_id("observer", t) for t in texts],
        documents=texts,
        metadatas=[{"agent": "observer"} for _ in texts],
        embeddings=vectors.tolist(),
    )
    with open_memory_store(load_settings()) as store:
        store.replace("observer", items, embedder="all-MiniLM-L6-v2")
    with (
        caplog.at_level(logging.WARNING, logger="multiagent.persistence.memory"),
        open_agent_memory(load_settings(), embeddings=minilm) as memory,
    ):
        assert memory.recall("observer", QUERY, k=2) == [PARAPHRASE, WORD_TWIN]
        kept, embedder = memory.export("observer")
    assert embedder == "all-MiniLM-L6-v2"
    # not re-embedded (Chroma may renormalise a vector by an ulp; a new embedding moves more)
    assert np.abs(np.float32(kept.embeddings) - np.float32(items.embeddings)).max() < 2e-8
    assert not [r for r in caplog.records if "re-embedded" in r.getMessage()]
