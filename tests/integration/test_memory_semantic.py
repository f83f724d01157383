"""With the packaged all-MiniLM-L6-v2 installed, recall is semantic, not lexical."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from langchain_core.embeddings import Embeddings

from multiagent.persistence.embeddings import MiniLMEmbeddings, load_embeddings, minilm_model_path
from multiagent.persistence.memory import open_agent_memory
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
