"""The snapshot file format: building a document, checking one, reading just its header.

The JSON document puts its header keys first and ``payload`` last, so a listing can read the
header from the first compressed block without inflating the embeddings. The checksum is the
SHA-256 of the whole document but the checksum itself (header and payload), serialised
canonically (sorted keys, no spaces), which JSON round trips reproduce exactly: Python writes
floats as their shortest exact repr. Schema version 1 summed the payload alone, so a damaged
header (its embedder, its creation time) went unnoticed; version 1 files are still read and
checked that way, since users keep them. A version 2 file whose version is changed to 1 fails
too: its checksum is not the payload's.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import math
import zlib
from pathlib import Path
from typing import Any

from multiagent.errors import UsageError
from multiagent.persistence._collections import MemoryItems, check_agent
from multiagent.persistence.crypto import MAGIC, Keyring, is_sealed

FORMAT = "multiagent.memory-snapshot"
SCHEMA_VERSION = 2
SUPPORTED_VERSIONS = (1, 2)
_HEADER_KEYS = ("format", "schema_version", "agent", "created_at", "item_count", "embedder")
_PAYLOAD_MARK = b',"payload":'
#: Vector sizes of the embedders this package writes: a snapshot claiming one of them with
#: vectors of another size would restore and then break every later search of that agent.
_DIMENSIONS = {"all-MiniLM-L6-v2": 384, "lexical-hash-v1": 512}


def payload_checksum(payload: Any) -> str:
    """``sha256:<hex>`` of the canonical JSON of ``payload`` (the schema version 1 checksum)."""
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "sha256:" + hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def document_checksum(document: dict[str, Any]) -> str:
    """``sha256:<hex>`` of everything in ``document`` but its checksum: header and payload."""
    return payload_checksum({k: v for k, v in document.items() if k != "checksum"})


def build_document(
    *,
    agent: str,
    created_at: str,
    embedder: str | None,
    items: MemoryItems,
    threads: dict[str, dict[str, Any]],
) -> tuple[dict[str, Any], bytes]:
    """Return the header and the serialised document (uncompressed)."""
    payload = {
        "agent": agent,
        "items": [
            {"id": i, "document": d, "metadata": m, "embedding": e}
            for i, d, m, e in zip(
                items.ids, items.documents, items.metadatas, items.embeddings, strict=True
            )
        ],
        "threads": threads,
    }
    header: dict[str, Any] = {
        "format": FORMAT,
        "schema_version": SCHEMA_VERSION,
        "agent": agent,
        "created_at": created_at,
        "item_count": len(items),
        "embedder": embedder,
    }
    header["checksum"] = document_checksum({**header, "payload": payload})
    document = {**header, "payload": payload}
    data = json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return header, data


def _check_header(document: Any, source: str) -> dict[str, Any]:
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise UsageError(
            f"{source} is not a multiagent memory snapshot (format {FORMAT!r} expected); "
            "nothing was restored"
        )
    version = document.get("schema_version")
    if version not in SUPPORTED_VERSIONS:
        supported = ", ".join(str(v) for v in SUPPORTED_VERSIONS)
        raise UsageError(
            f"snapshot {source} has schema version {version!r}; this version of multiagent "
            f"reads schema version {supported}; nothing was restored"
        )
    missing = [k for k in (*_HEADER_KEYS, "checksum") if k not in document]
    if missing:
        raise UsageError(f"snapshot {source} lacks {', '.join(missing)}; nothing was restored")
    return {k: document[k] for k in (*_HEADER_KEYS, "checksum")}


def _bad(source: str, what: str) -> UsageError:
    return UsageError(f"snapshot {source} is malformed: {what}; nothing was restored")


def _items(payload: dict[str, Any], source: str) -> MemoryItems:
    entries = payload.get("items")
    if not isinstance(entries, list):
        raise _bad(source, "payload.items is not a list")
    items = MemoryItems()
    for n, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise _bad(source, f"item {n} is not an object")
        item_id, document = entry.get("id"), entry.get("document")
        metadata, embedding = entry.get("metadata"), entry.get("embedding")
        if not isinstance(item_id, str) or not isinstance(document, str) or not item_id:
            raise _bad(source, f"item {n} has no string id and document")
        if not isinstance(metadata, dict) or not all(
            isinstance(v, str | int | float | bool) for v in metadata.values()
        ):
            raise _bad(source, f"item {n} metadata is not a flat object")
        if not isinstance(embedding, list) or not all(
            isinstance(x, int | float) and not isinstance(x, bool) for x in embedding
        ):
            raise _bad(source, f"item {n} embedding is not a list of numbers")
        if not embedding or not all(math.isfinite(x) for x in embedding):
            raise _bad(source, f"item {n} embedding is empty or holds NaN or infinity")
        items.ids.append(item_id)
        items.documents.append(document)
        items.metadatas.append(metadata)
        items.embeddings.append([float(x) for x in embedding])
    if len({len(e) for e in items.embeddings}) > 1:
        raise _bad(source, "embeddings have different dimensions")
    if len(set(items.ids)) != len(items.ids):
        raise _bad(source, "duplicate item ids")
    return items


def parse_document(document: Any, *, source: str) -> tuple[dict[str, Any], MemoryItems]:
    """Check format, schema, checksum and structure; return the header and the items."""
    header = _check_header(document, source)
    payload = document.get("payload")
    if not isinstance(payload, dict):
        raise _bad(source, "no payload")
    version1 = header["schema_version"] == 1  # its checksum covers the payload alone
    actual = payload_checksum(payload) if version1 else document_checksum(document)
    if actual != header["checksum"]:
        raise UsageError(
            f"snapshot {source} fails its checksum (recorded {header['checksum']}, content "
            f"{actual}): its header or payload was altered or damaged; nothing was restored"
        )
    agent = payload.get("agent")
    if agent != header["agent"] or not isinstance(agent, str):
        raise _bad(source, f"header agent {header['agent']!r} differs from payload {agent!r}")
    check_agent(agent)
    items = _items(payload, source)
    expected = _DIMENSIONS.get(str(header["embedder"]))
    if expected is not None and items.embeddings and len(items.embeddings[0]) != expected:
        raise _bad(
            source,
            f"embedder {header['embedder']!r} makes {expected}-dimensional vectors, the "
            f"items hold {len(items.embeddings[0])}",
        )
    if len(items) != header["item_count"]:
        raise _bad(source, f"header says {header['item_count']} items, payload has {len(items)}")
    return header, items


def read_header(path: Path, *, keyring: Keyring | None = None) -> dict[str, Any]:
    """The header of a snapshot, read from the start of the file only.

    An encrypted snapshot is decrypted whole first (GCM authenticates the whole file), which
    needs its key: without it this raises the one-line error naming the key id.
    """
    try:
        with path.open("rb") as raw:
            sealed = is_sealed(raw.read(len(MAGIC) + 32))
        source: Any = path
        if sealed:
            ring = keyring or Keyring(None)
            source = io.BytesIO(ring.open(path.read_bytes(), what=f"snapshot {path}"))
        with gzip.open(source, "rb") as handle:
            head = handle.read(64 * 1024)
    except (OSError, EOFError, zlib.error) as exc:
        raise UsageError(f"snapshot {path} is unreadable ({exc})") from None
    cut = head.find(_PAYLOAD_MARK)
    if cut < 0:
        raise UsageError(f"snapshot {path} has no header")
    try:
        document = json.loads(head[:cut] + b"}")
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UsageError(f"snapshot {path} has a malformed header ({exc})") from None
    return _check_header(document, str(path))
