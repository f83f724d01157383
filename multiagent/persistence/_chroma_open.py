"""Opening Chroma's persistent client for less, and asking its files what it holds.

Importing chromadb and opening its first persistent client cost a run with memory about
0.4 s of CPU, and about half of it is not Chroma's work:

- ``overrides.override``, which decorates every method of Chroma's API classes, checks each
  signature against the base class and disassembles the class body to find it, at import;
  that is a development-time check of Chroma's own code;
- chromadb's OpenTelemetry module imports the OTLP/gRPC span exporter (protobuf, grpc) at
  import, and uses it only when ``chroma_otel_collection_endpoint`` is set.

:func:`open_persistent_client` imports Chroma the first time with both deferred: the
decorator only marks the method (as it does once checked) and the exporter's class stands for
the real one until someone makes one, which then imports the real module and returns its
exporter. Both stand-ins are in place only while Chroma's modules are first imported, under a
lock; a process that imported them before (the project's tracing imports the same exporter
when asked for OTLP over gRPC) keeps its own. Should that import fail (a later Chroma that
imports another name from the exporter's module, say), Chroma is imported plainly instead.

:func:`has_collection` answers from Chroma's SQLite file, without importing Chroma, whether a
collection exists: a run whose agents have no memory yet needs Chroma only to write.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import sqlite3
import sys
import threading
import types
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

#: Chroma's SQLite file in its persist directory.
CHROMA_SQLITE = "chroma.sqlite3"
_OTLP_SPANS = "opentelemetry.exporter.otlp.proto.grpc.trace_exporter"
_lean_lock = threading.Lock()
_fell_back = False
#: Chroma's modules a first persistent client needs (the client imports the last two on open).
_FIRST_OPEN = ("chromadb", "chromadb.api.rust", "chromadb.telemetry.product.posthog")
logger = logging.getLogger("multiagent.persistence.memory")


def _marked(method: Any = None, **_checks: Any) -> Any:
    """``overrides.override`` without its checks: marks the method as the checked one does."""
    if method is None:
        return _marked
    method.__override__ = True
    return method


def _deferred_otlp_module() -> types.ModuleType:
    """A stand-in of the OTLP/gRPC span exporter module whose class imports the real one."""

    class OTLPSpanExporter:
        """Imports the real exporter when made (Chroma makes one only when asked to export)."""

        def __new__(cls, *args: Any, **kwargs: Any) -> Any:
            real = importlib.import_module(_OTLP_SPANS)
            return real.OTLPSpanExporter(*args, **kwargs)

    module = types.ModuleType(_OTLP_SPANS)
    module.OTLPSpanExporter = OTLPSpanExporter  # type: ignore[attr-defined]
    return module


@contextmanager
def _lean_chroma_import() -> Iterator[None]:
    """While Chroma's modules are first imported: no signature checks, no eager exporter."""
    with _lean_lock:
        if "chromadb.api.rust" in sys.modules:  # imported already: nothing to save
            yield
            return
        import overrides

        saved = (overrides.override, overrides.overrides)
        stand_in = _OTLP_SPANS not in sys.modules
        if stand_in:
            sys.modules[_OTLP_SPANS] = _deferred_otlp_module()
        overrides.override = overrides.overrides = _marked
        try:
            yield
        finally:
            overrides.override, overrides.overrides = saved
            if stand_in and getattr(sys.modules.get(_OTLP_SPANS), "__file__", None) is None:
                sys.modules.pop(_OTLP_SPANS, None)  # the next import of it finds the real one


def _forget_chroma_modules() -> None:
    """Drop Chroma's modules from ``sys.modules`` (a failed import left some half made)."""
    for name in [n for n in sys.modules if n == "chromadb" or n.startswith("chromadb.")]:
        del sys.modules[name]


def _import_chroma() -> None:
    """Import Chroma and the modules its client's first open needs, lean the first time.

    The lean import leans on how this version of Chroma imports (see the module's docstring).
    If it fails, whatever a future Chroma changed, the stand-ins are gone (the context's
    ``finally``), the half-imported modules are dropped and Chroma is imported plainly.
    """
    global _fell_back
    if not _fell_back:
        try:
            with _lean_chroma_import():
                for name in _FIRST_OPEN:
                    importlib.import_module(name)
            return
        except Exception as exc:
            with _lean_lock:
                _forget_chroma_modules()
                if not _fell_back:
                    _fell_back = True
                    logger.debug("lean Chroma import failed (%r); importing it plainly", exc)
    importlib.import_module("chromadb")  # the first open imports the rest


def open_persistent_client(path: Path) -> Any:
    """A Chroma persistent client at ``path`` with anonymized telemetry off."""
    _import_chroma()
    import chromadb
    from chromadb.config import Settings as ChromaSettings

    return chromadb.PersistentClient(
        path=str(path), settings=ChromaSettings(anonymized_telemetry=False)
    )


def has_collection(path: Path, name: str) -> bool | None:
    """Whether Chroma's files at ``path`` hold a collection ``name``; ``None``: cannot tell.

    No directory (or a directory without Chroma's database) holds none. Anything else that
    is not a readable Chroma database, a locked one included, cannot tell: the caller asks
    Chroma itself.
    """
    if not path.exists():
        return False
    if not path.is_dir():
        return None
    database = path / CHROMA_SQLITE
    if not database.is_file():
        return False
    try:
        with contextlib.closing(
            sqlite3.connect(f"{database.as_uri()}?mode=ro", uri=True, timeout=0.5)
        ) as connection:
            row = connection.execute(
                "SELECT 1 FROM collections WHERE name = ? LIMIT 1", (name,)
            ).fetchone()
    except sqlite3.Error:
        return None
    return row is not None
