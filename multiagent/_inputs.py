"""What a value typed by a user must look like: ids, numbers, text and the files they name.

The lowest layer (it imports only :mod:`multiagent.errors`), so the CLI, the Python API and the
stores check a value the same way wherever it enters. Every check raises
:class:`~multiagent.errors.UsageError` with one line naming the value, where it came from and
what is valid.

- **Ids** (thread ids, batch ids, run ids, queue names): 1 to 128 characters from
  ``A-Z a-z 0-9 . _ -``, starting with a letter or a digit. So an id is never empty, never a
  path (``..``, ``a/b``), never an option (``-x``), and cannot carry newlines or escape
  sequences into a listing.
- **Item ids** (of the items of a validation batch): any text a user keys their items by, but
  never empty or blank and without control characters; an item without an ``id`` is numbered
  by its position (its line in a batch file), so an empty ``id`` is refused rather than
  guessed at.
- **Numbers**: finite (no NaN, no infinity) and within the option's range.
- **Text** (a task, a topic, a text to validate): valid UTF-8 with no terminal control
  characters (tab, newline and carriage return are text). ``-`` reads it from standard input,
  ``@PATH`` from a file, ``@@...`` stands for a literal leading ``@``.
- **Files**: they exist, are regular files, hold UTF-8 text (no NUL bytes; a leading byte order
  mark is dropped).
"""

from __future__ import annotations

import math
import re
import sys
import unicodedata
from pathlib import Path
from typing import TextIO

from multiagent.errors import UsageError

#: The characters and length of every id, as documented in ``--help`` and the README.
ID_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}"
ID_RULE = "1-128 characters from A-Z a-z 0-9 . _ -, starting with a letter or digit"
_ID = re.compile(ID_PATTERN)
#: Text longer than this is refused (a task is a prompt, not a document store).
MAX_TEXT_CHARS = 4 * 1024 * 1024
_TEXT_KEEP = frozenset("\t\n\r")
#: Every character :func:`check_text` may refuse: the control characters (category ``Cc``)
#: but those of :data:`_TEXT_KEEP`, and the surrogates (``Cs``, argv's undecodable bytes among
#: them). Text without one is accepted without a look at each character.
_TEXT_SUSPECT = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")


def shown(value: str, *, limit: int = 60) -> str:
    """``value`` as a short, printable ``repr`` (control characters and surrogates escaped)."""
    text = value if len(value) <= limit else value[:limit] + "…"
    return ascii(text) if not text.isprintable() else repr(text)


def check_id(value: str, *, source: str, kind: str = "id") -> str:
    """Return ``value`` when it is a valid id; else raise one line naming it and the rule."""
    if _ID.fullmatch(value) is None:
        raise UsageError(f"invalid {kind} {shown(value)} (from {source}): {ID_RULE}")
    return value


def item_id_problem(value: str) -> str | None:
    """Why ``value`` cannot be an item id (see the module docstring), or ``None`` when it can."""
    if not value.strip():
        return f"item id {shown(value)} is empty; give a non-blank id, or leave 'id' out"
    if any(unicodedata.category(char) in ("Cc", "Cs") for char in value):
        return f"item id {shown(value)} holds control characters; give printable text"
    return None


def check_number(
    value: float,
    *,
    source: str,
    minimum: float | None = None,
    maximum: float | None = None,
) -> float:
    """Return ``value`` when finite and within ``[minimum, maximum]``; else raise one line."""
    if isinstance(value, float) and not math.isfinite(value):
        what = source.lstrip("-").replace("-", " ").lower()
        raise UsageError(f"invalid {what} {value!r} (from {source}): it must be a finite number")
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        if minimum is not None and maximum is not None:
            rule = f"between {minimum:g} and {maximum:g}"
        else:
            rule = f"at least {minimum:g}" if minimum is not None else f"at most {maximum:g}"
        raise UsageError(f"{source} must be {rule}, got {value!r}")
    return value


def check_text(value: str, *, source: str) -> str:
    """Return ``value`` when it is valid text; else raise one line naming the first bad place."""
    suspect = _TEXT_SUSPECT.search(value)
    start = len(value) if suspect is None else suspect.start()
    for index, char in enumerate(value[start:], start):
        if 0xDC80 <= ord(char) <= 0xDCFF:  # how Python keeps bytes of argv that are not UTF-8
            raise UsageError(
                f"{source} is not valid UTF-8 (byte 0x{ord(char) - 0xDC00:02x} at character "
                f"{index}); give UTF-8 text, or the text in a file with @PATH"
            )
        if char not in _TEXT_KEEP and unicodedata.category(char) in ("Cc", "Cs"):
            raise UsageError(
                f"{source} holds the control character U+{ord(char):04X} at character {index}; "
                "terminal control characters are not accepted in text"
            )
    if len(value) > MAX_TEXT_CHARS:
        raise UsageError(f"{source} is {len(value)} characters long; at most {MAX_TEXT_CHARS}")
    return value


def read_text_file(path: str | Path, *, what: str) -> str:
    """Return the UTF-8 text of ``path``; missing, a directory, binary or not UTF-8 is one line.

    Args:
        path: The file.
        what: What the file is, for the message (``"batch file"``, ``"agents file"``).
    """
    target = Path(path)
    try:
        data = target.read_bytes()
    except IsADirectoryError:
        raise UsageError(f"{what} {target} is a directory; give a file") from None
    except FileNotFoundError:
        raise UsageError(f"{what} {target} does not exist") from None
    except OSError as exc:
        raise UsageError(f"cannot read {what} {target}: {exc.strerror or exc}") from None
    if b"\x00" in data:
        raise UsageError(f"{what} {target} is binary (it holds NUL bytes); give UTF-8 text")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(
            f"{what} {target} is not valid UTF-8 (byte 0x{data[exc.start]:02x} at offset "
            f"{exc.start}); save it as UTF-8"
        ) from None
    # a byte order mark that some editors write first is not part of the text
    return text.removeprefix("\ufeff")


def expand_text(value: str, *, source: str, stdin: TextIO | None = None) -> str:
    """Resolve a text argument: ``-`` reads standard input, ``@PATH`` a file, ``@@x`` is ``@x``.

    The result is checked with :func:`check_text`, so it is valid, printable-safe text.
    """
    if value == "-":
        stream = stdin if stdin is not None else sys.stdin
        try:
            text = stream.read()
        except UnicodeDecodeError as exc:
            raise UsageError(
                f"standard input for {source} is not valid UTF-8 (offset {exc.start})"
            ) from None
        where = f"{source} (standard input)"
    elif value.startswith("@@"):
        text, where = value[1:], source
    elif value == "@":  # an empty path would be read as the working directory
        raise UsageError(
            f"@ names no file for {source}; give @PATH, or @@ for a text that starts with @"
        )
    elif value.startswith("@"):
        check_text(value[1:], source=f"the file name of {source}")
        text, where = read_text_file(value[1:], what=f"file of {source}"), f"{source} ({value})"
    else:
        text, where = value, source
    check_text(text, source=where)
    if not text.strip():
        raise UsageError(f"the {where.lower()} is empty; give some text")
    return text


__all__ = [
    "ID_PATTERN",
    "ID_RULE",
    "MAX_TEXT_CHARS",
    "check_id",
    "check_number",
    "check_text",
    "expand_text",
    "item_id_problem",
    "read_text_file",
    "shown",
]
