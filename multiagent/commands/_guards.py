"""The one place that checks every command-line value and turns every known failure into a line.

:func:`guard_parameters` runs once over the command tree before a command is parsed: each
parameter gets a check after typer has converted it, so no command can forget one and no
command body runs with a bad value:

- every float is finite (``--budget nan`` and ``--threshold inf`` are refused);
- every number named in :data:`RANGES` is within its range (an integer option that is not
  listed must be at least 0);
- every string is valid UTF-8 text without terminal control characters;
- ``--thread``, ``--checkpoint`` and batch ids follow the id rule of :mod:`multiagent._inputs`;
- TASK, TOPIC and TEXT may be ``-`` (standard input) or ``@PATH`` (a file);
- a ``--report`` file (written at the end of a benchmark) is not a directory and its directory
  exists, so a long benchmark does not run for nothing.

:func:`one_line_error` maps what a command may raise (the project's errors, a damaged SQLite
file, undecodable text, an unusable path) to the :class:`~multiagent.errors.MultiagentError`
the CLI prints as ``error: ...`` with its exit code: 2 for bad input, configuration and
damaged data, 1 for failures of the world.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

from multiagent._inputs import check_id, check_number, check_text, expand_text
from multiagent.errors import DamagedStoreError, MultiagentError, UsageError

#: Inclusive ranges of numeric options, by parameter name (``None``: no bound that side).
RANGES: dict[str, tuple[float | None, float | None]] = {
    "budget": (0, None),
    "threshold": (None, None),  # (0, 1]: an open bound, checked by the command
    "validators": (1, 6),
    "rounds": (1, 20),
    "concurrency": (1, 64),
    "limit": (1, None),
    "port": (0, 65535),
    "hours": (1, 24),
    # above 0 (an open bound): the simulator's configuration checks them, in one message
    "rpm": (None, None),
    "tpm": (None, None),
}
_IDS = {"thread": "thread id", "checkpoint": "checkpoint id", "batch_id": "batch id"}
_TEXTS = ("task", "topic", "text")
_OUTPUT_FILES = ("report",)


def _source(param: Any) -> str:
    opts = getattr(param, "opts", None) or []
    if opts and str(opts[0]).startswith("-"):
        return str(max(opts, key=len))
    return str(getattr(param, "name", "value")).upper()


def _check(name: str, source: str, value: Any) -> Any:
    """The checked (and, for texts, expanded) value of one parameter."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int | float):
        low, high = RANGES.get(name, (0, None))
        return check_number(value, source=source, minimum=low, maximum=high)
    if isinstance(value, str):
        if name in _TEXTS:
            return expand_text(value, source=source)
        check_text(value, source=source)
        if name in _IDS:
            check_id(value, source=source, kind=_IDS[name])
        return value
    if isinstance(value, Path) and name in _OUTPUT_FILES:
        if value.is_dir():
            raise UsageError(f"{source} {value} is a directory; give a file to write")
        if not value.parent.is_dir():
            raise UsageError(f"{source} {value}: the directory {value.parent} does not exist")
        return value
    if isinstance(value, list | tuple):
        return type(value)(_check(name, source, item) for item in value)
    return value


def _guarded(param: Any, callback: Callable[..., Any] | None) -> Callable[..., Any]:
    name, source = str(param.name), _source(param)

    def guarded(ctx: Any, this: Any, value: Any) -> Any:
        value = _check(name, source, value)
        return value if callback is None else callback(ctx, this, value)

    guarded.__multiagent_guard__ = True  # type: ignore[attr-defined]
    return guarded


def guard_parameters(command: Any) -> None:
    """Give every parameter under ``command`` (a click command or group) its checks, once."""
    for param in getattr(command, "params", []):
        if not getattr(param.callback, "__multiagent_guard__", False):
            param.callback = _guarded(param, param.callback)
    for sub in getattr(command, "commands", {}).values():
        guard_parameters(sub)


_CORRUPT = ("not a database", "malformed", "code: 11)", "code: 26)", "corrupt")
_TRANSIENT = ("locked", "busy", "unable to open", "readonly", "disk i/o")


def one_line_error(exc: BaseException, *, home: Any = None) -> MultiagentError | None:
    """The user-facing error for ``exc``, or ``None`` when it is not a known kind.

    Args:
        exc: What a command raised.
        home: The data directory of the command's settings, to name a damaged file in it.
    """
    if isinstance(exc, MultiagentError):
        return exc
    if isinstance(exc, sqlite3.DatabaseError):
        message = str(exc)
        if isinstance(exc, sqlite3.OperationalError) and any(t in message for t in _TRANSIENT):
            return MultiagentError(f"a database in the data directory is unusable: {message}")
        from multiagent.persistence.health import damaged_store_error

        return damaged_store_error(home, detail=message)
    if type(exc).__module__.split(".")[0] == "chromadb":  # Chroma wraps SQLite's errors
        message = str(exc)
        if any(sign in message for sign in _CORRUPT):
            from multiagent.persistence.health import damaged_store_error

            return damaged_store_error(home, detail=message)
        return MultiagentError(f"agent memory (Chroma) failed: {message}")
    if isinstance(exc, UnicodeError):
        return UsageError(f"text that is not valid UTF-8 cannot be used: {exc}")
    if isinstance(exc, OSError):
        where = f" ({exc.filename})" if exc.filename else ""
        return MultiagentError(f"{exc.strerror or exc}{where}")
    return None


__all__ = ["RANGES", "DamagedStoreError", "guard_parameters", "one_line_error"]
