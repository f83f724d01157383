"""Opening Chroma's persistent client for less, and asking its files what it holds.

Importing chromadb and opening its first persistent client cost a run with memory about
0.4 s of CPU, and about half of it is not Chroma's work:

- ``overrides.override``, which decorates every method of Chroma's API classes, checks each
  signature against the base class and disassembles the class body to find it, at import;
  that is a development-time check of Chroma's own code;
- chromadb's OpenTelemetry module imports the OTLP/gRPC span exporter (protobuf, grpc) at
  import, and uses it only when ``chroma_otel_collection_endpoint`` is set;
- Chroma's collection configuration imports its embedding-function package for the registry
  of known functions, and the package imports every provider's module and their JSON
  schemas (jsonschema, attrs, yaml: about 0.1 s); a collection made without an embedding
  function, as this project's are (it embeds itself), never looks the registry up.

:func:`open_persistent_client` imports Chroma the first time with all three deferred: the
decorator only marks the method (as it does once checked), the exporter's class stands for
the real one until someone makes one, which then imports the real module and returns its
exporter, and the registry and its decorator stand for the package's own, importing it on
first use and handing every use on to it. The stand-ins are in sys.modules only while
Chroma's modules are first imported, under a lock; a process that imported the real modules
before (the project's tracing imports the same exporter when asked for OTLP over gRPC) keeps
its own. Should that import fail (a later Chroma that imports another name from the
exporter's module, say), Chroma is imported plainly instead.

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
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

#: Chroma's SQLite file in its persist directory.
CHROMA_SQLITE = "chroma.sqlite3"
_OTLP_SPANS = "opentelemetry.exporter.otlp.proto.grpc.trace_exporter"
_EMBEDDING_FUNCTIONS = "chromadb.utils.embedding_functions"
_lean_lock = threading.RLock()  # re-entered when Chroma reads a registry during its import
#: Chroma shares one "system" among the clients of a path, in a class-level registry it
#: fills, reuses and empties without a lock: two clients opened at once (two runs' memories
#: on their own threads) both started it, and one failed with a ``KeyError``; one closed
#: while another opened stopped the system the new client was handed.
_clients_lock = threading.Lock()
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


def _real_embedding_functions() -> types.ModuleType:
    """Chroma's embedding-function package itself (imported now if only the stand-in was)."""
    module = sys.modules.get(_EMBEDDING_FUNCTIONS)
    if module is None or getattr(module, "__file__", None) is None:
        with _lean_lock:
            sys.modules.pop(_EMBEDDING_FUNCTIONS, None)
            module = importlib.import_module(_EMBEDDING_FUNCTIONS)
    return module


class _KnownFunctions(MutableMapping[str, Any]):
    """Chroma's registry of embedding functions, read from the real package on first use."""

    def __init__(self, name: str) -> None:
        self._name = name

    def _real(self) -> MutableMapping[str, Any]:
        registry: MutableMapping[str, Any] = getattr(_real_embedding_functions(), self._name)
        return registry

    def __getitem__(self, key: str) -> Any:
        return self._real()[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self._real()[key] = value

    def __delitem__(self, key: str) -> None:
        del self._real()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._real())

    def __len__(self) -> int:
        return len(self._real())


def _deferred_embedding_functions() -> types.ModuleType:
    """A stand-in of Chroma's embedding-function package: its registries and decorator."""

    def register_embedding_function(*args: Any, **kwargs: Any) -> Any:
        return _real_embedding_functions().register_embedding_function(*args, **kwargs)

    module = types.ModuleType(_EMBEDDING_FUNCTIONS)
    module.known_embedding_functions = _KnownFunctions("known_embedding_functions")  # type: ignore[attr-defined]
    module.sparse_known_embedding_functions = _KnownFunctions(  # type: ignore[attr-defined]
        "sparse_known_embedding_functions"
    )
    module.register_embedding_function = register_embedding_function  # type: ignore[attr-defined]
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
        stand_ins = {
            name: make()
            for name, make in (
                (_OTLP_SPANS, _deferred_otlp_module),
                (_EMBEDDING_FUNCTIONS, _deferred_embedding_functions),
            )
            if name not in sys.modules
        }
        sys.modules.update(stand_ins)
        overrides.override = overrides.overrides = _marked
        try:
            yield
        finally:
            overrides.override, overrides.overrides = saved
            for name in stand_ins:
                if getattr(sys.modules.get(name), "__file__", None) is None:
                    sys.modules.pop(name, None)  # the next import of it finds the real one


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

    with _clients_lock:
        return chromadb.PersistentClient(
            path=str(path), settings=ChromaSettings(anonymized_telemetry=False)
        )


def close_persistent_client(client: Any) -> None:
    """Close a client of :func:`open_persistent_client` (its files stay)."""
    with _clients_lock:
        client.close()


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
            sqlite3.connect(f"{database.absolute().as_uri()}?mode=ro", uri=True, timeout=0.5)
        ) as connection:
            row = connection.execute(
                "SELECT 1 FROM collections WHERE name = ? LIMIT 1", (name,)
            ).fetchone()
    except sqlite3.Error:
        return None
    return row is not None
