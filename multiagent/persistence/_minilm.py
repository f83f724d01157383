"""all-MiniLM-L6-v2 in plain numpy: the packaged weights, no torch, nothing downloaded.

The model is a 6-layer BERT (hidden 384, 12 heads, intermediate 1536, exact GELU) followed by
mean pooling over the attention mask and L2 normalisation, exactly the three modules of the
packaged sentence-transformers pipeline. The weights are read straight from the package's
``model.safetensors`` (a JSON header and raw little-endian arrays, memory-mapped: nothing is
copied until a layer is used) and the text is split by the package's own ``tokenizer.json``
through ``tokenizers`` (a chromadb dependency), truncated at the model's 256 tokens as
sentence-transformers does. Importing torch and sentence-transformers costs seconds per
process; this costs tens of milliseconds and gives the same vectors to float32 rounding.

Why numpy and not onnxruntime: the package ships no ONNX graph, and making one needs torch
(or the ``onnx`` package); for the short texts agent memory embeds, numpy's BLAS is fast enough.
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

Array = NDArray[np.float32]

#: Tokens per text; longer texts are cut, as sentence-transformers cuts them.
MAX_TOKENS = 256
_BATCH = 32
_PAD_SLACK = 1.25  # a batch pads its texts to at most this times the shortest one
_LAYERS = 6
_HEADS = 12
_EPS = 1e-12
_DTYPES: dict[str, np.dtype[Any]] = {"F32": np.dtype("<f4"), "I64": np.dtype("<i8")}


def read_safetensors(path: Path) -> dict[str, NDArray[Any]]:
    """Memory-map every tensor of a ``.safetensors`` file as a read-only numpy array."""
    with path.open("rb") as handle:
        (size,) = struct.unpack("<Q", handle.read(8))
        header = json.loads(handle.read(size))
    data = np.memmap(path, dtype=np.uint8, mode="r", offset=8 + size)
    tensors: dict[str, NDArray[Any]] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dtype = _DTYPES.get(info["dtype"])
        if dtype is None:
            raise ValueError(f"{path}: tensor {name} has unsupported dtype {info['dtype']}")
        start, end = info["data_offsets"]
        tensors[name] = data[start:end].view(dtype).reshape(info["shape"])
    return tensors


def _f32(x: Any) -> Array:
    """``x`` as a float32 array (no copy when it is one already)."""
    return np.asarray(x, dtype=np.float32)


_ERF_P = np.float32(0.3275911)
_ERF_A = tuple(
    np.float32(a) for a in (1.061405429, -1.453152027, 1.421413741, -0.284496736, 0.254829592)
)
_INV_SQRT2 = np.float32(1.0 / math.sqrt(2.0))


def _gelu(x: Array) -> Array:
    """Exact GELU, ``x·Φ(x)``, with erf by Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7).

    numpy has no erf; the polynomial is evaluated in place, since on a feed-forward layer's
    activations the temporaries cost more than the arithmetic.
    """
    a = np.abs(x) * _INV_SQRT2
    t = a * _ERF_P
    t += 1.0
    np.reciprocal(t, out=t)
    poly = t * _ERF_A[0]
    for coefficient in _ERF_A[1:]:
        poly += coefficient
        poly *= t
    np.multiply(a, a, out=a)
    np.negative(a, out=a)
    np.exp(a, out=a)
    poly *= a  # now 1 - erf(|x|/√2)
    np.subtract(1.0, poly, out=poly)
    np.copysign(poly, x, out=poly)  # erf(x/√2)
    poly += 1.0
    poly *= x
    poly *= 0.5
    return poly


def _layer_norm(x: Array, weight: Array, bias: Array) -> Array:
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return _f32((x - mean) / np.sqrt(var + _EPS) * weight + bias)


def _softmax(x: Array) -> Array:
    shifted = np.exp(x - x.max(axis=-1, keepdims=True))
    return _f32(shifted / shifted.sum(axis=-1, keepdims=True))


class NumpyMiniLM:
    """The packaged all-MiniLM-L6-v2, run with numpy: ``encode(texts)`` gives unit vectors."""

    def __init__(self, model_dir: Path) -> None:
        from tokenizers import Tokenizer

        self.model_dir = model_dir
        self._w = read_safetensors(model_dir / "model.safetensors")
        tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        # the file pads every text to 128 and cuts there; sentence-transformers pads a batch
        # to its longest text and cuts at the model's max_seq_length instead
        tokenizer.no_padding()
        tokenizer.enable_truncation(max_length=MAX_TOKENS)
        self._tokenizer = tokenizer

    def _linear(self, x: Array, name: str) -> Array:
        # torch stores Linear weights as (out, in): x @ W.T, done by BLAS on the mapped array
        out = _f32(x @ self._w[f"{name}.weight"].T)
        out += self._w[f"{name}.bias"]
        return out

    def _norm(self, x: Array, name: str) -> Array:
        return _layer_norm(x, self._w[f"{name}.weight"], self._w[f"{name}.bias"])

    def _forward(self, ids: NDArray[np.int64], mask: Array) -> Array:
        """Token ids and mask (batch, length) → pooled, normalised vectors (batch, 384)."""
        w = self._w
        batch, length = ids.shape
        x = (
            w["embeddings.word_embeddings.weight"][ids]
            + w["embeddings.position_embeddings.weight"][:length]
            + w["embeddings.token_type_embeddings.weight"][0]
        )
        x = self._norm(_f32(x), "embeddings.LayerNorm")
        head = x.shape[-1] // _HEADS
        # padded keys get the most negative float, as transformers does, so they weigh nothing
        bias = ((1.0 - mask) * np.finfo(np.float32).min)[:, None, None, :]
        scale = np.float32(1.0 / math.sqrt(head))
        for n in range(_LAYERS):
            p = f"encoder.layer.{n}"

            def heads(t: Array) -> Array:
                return t.reshape(batch, length, _HEADS, head).transpose(0, 2, 1, 3)

            q = heads(self._linear(x, f"{p}.attention.self.query"))
            k = heads(self._linear(x, f"{p}.attention.self.key"))
            v = heads(self._linear(x, f"{p}.attention.self.value"))
            probs = _softmax((q @ k.transpose(0, 1, 3, 2)) * scale + bias)
            context = (probs @ v).transpose(0, 2, 1, 3).reshape(batch, length, -1)
            attended = self._linear(context, f"{p}.attention.output.dense")
            x = self._norm(attended + x, f"{p}.attention.output.LayerNorm")
            inner = _gelu(self._linear(x, f"{p}.intermediate.dense"))
            x = self._norm(self._linear(inner, f"{p}.output.dense") + x, f"{p}.output.LayerNorm")
        summed = (x * mask[:, :, None]).sum(axis=1)
        pooled = summed / np.clip(mask.sum(axis=1, keepdims=True), 1e-9, None)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return _f32(pooled / np.clip(norms, 1e-12, None))

    def encode(self, texts: list[str]) -> Array:
        """Embed ``texts`` into unit vectors (``len(texts)`` × 384), in input order."""
        width = self._w["embeddings.word_embeddings.weight"].shape[1]
        out = np.zeros((len(texts), width), dtype=np.float32)
        encodings = self._tokenizer.encode_batch(texts)
        for chunk in _batches([len(e.ids) for e in encodings]):
            length = max(len(encodings[i].ids) for i in chunk)
            ids = np.zeros((len(chunk), length), dtype=np.int64)
            mask = np.zeros((len(chunk), length), dtype=np.float32)
            for row, i in enumerate(chunk):
                tokens = encodings[i].ids
                ids[row, : len(tokens)] = tokens
                mask[row, : len(tokens)] = 1.0
            out[chunk] = self._forward(ids, mask)
        return out


def _batches(lengths: list[int]) -> list[list[int]]:
    """Indexes grouped into batches of similar length (padding is work thrown away)."""
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    batches: list[list[int]] = []
    for i in order:
        current = batches[-1] if batches else None
        if current and len(current) < _BATCH and lengths[i] <= _PAD_SLACK * lengths[current[0]]:
            current.append(i)
        else:
            batches.append([i])
    return batches
