"""The audit trail: one hash-chained JSON line per run and per administrative command.

Lines live under ``<MULTIAGENT_HOME>/audit/`` in numbered files (``audit-000001.jsonl``, ...);
a file that reaches ``max_bytes`` is closed and the next one started, and the chain runs on
across files. Each line carries ``seq`` (1, 2, 3, ... with no gap), ``prev`` (the SHA-256 of the
previous line's bytes; 64 zeros for the first) and ``hash`` (the SHA-256 of the line's own
canonical JSON without ``hash``). ``HEAD`` holds the last line's ``seq`` and ``hash``, so a line
cut off the end is missed too. An edited, removed, inserted or reordered line breaks the chain at
the line after it (or its own ``hash``), and :func:`verify_trail` names that line.

A process killed mid-append leaves a torn last line: part of a record, no newline, and HEAD
still naming the record before it (HEAD is replaced only after the line is on disk). The next
append sets it aside rather than stopping there or deleting it: the torn bytes stay where they
are, ended by a newline, and the new record chains from the last whole record and carries
``torn`` (the SHA-256 of the torn line's bytes). :func:`verify_trail` accepts a line that is not
a record only as the last line of the trail or when the record after it names its digest, and
lists it in ``torn``; any other such line, an edit of a set-aside line, or a record claiming a
torn line that is not there breaks the chain as before. An append refuses to set a torn line
aside when HEAD says that line was written whole: that is a record cut short afterwards, not a
crash. A whole last record that lost only its newline is ended and stays in the chain.

This is tamper-*evident* against edits that do not recompute the chain; whoever can rewrite
every line after an edit can hide it (ship the lines elsewhere as they are written to stop that).

Records hold no free text: who (the OS user), when, the command, profile, policy, thread id
(redacted with the project's redaction, as a thread id could be an e-mail address), correlation
id, tokens, cost, outcome and exit code, and the names (never the values) of the options given.
Appends from several processes are serialised by a file lock.
"""

from __future__ import annotations

import contextlib
import getpass
import hashlib
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from multiagent.errors import DamagedStoreError
from multiagent.persistence._files import FileLock, atomic_write_bytes
from multiagent.policies import Settings

AUDIT_DIR = "audit"
HEAD_FILE = "HEAD"
MAX_BYTES = 1024 * 1024
GENESIS = "0" * 64
_NAME = re.compile(r"^audit-(\d{6,})\.jsonl$")


def audit_dir(settings: Settings) -> Path:
    """Where the audit trail lives."""
    return settings.home / AUDIT_DIR


def line_digest(line: bytes) -> str:
    """SHA-256 of one line's bytes (without its newline): the next line's ``prev``."""
    return hashlib.sha256(line).hexdigest()


def _canonical(record: dict[str, Any]) -> bytes:
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def _seal(record: dict[str, Any]) -> bytes:
    body = {k: v for k, v in record.items() if k != "hash"}
    return _canonical({**body, "hash": hashlib.sha256(_canonical(body)).hexdigest()})


def current_user() -> str:
    """The OS user running the command."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (some containers)
        return f"uid:{os.getuid()}"


def trail_files(directory: Path) -> list[Path]:
    """The trail's files, oldest first."""
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def _last_lines(path: Path) -> list[bytes]:
    """The file's last lines that are not blank, oldest first (its last 64 KiB)."""
    with path.open("rb") as handle:
        handle.seek(0, os.SEEK_END)
        size = handle.tell()
        handle.seek(max(0, size - 64 * 1024))
        return [line for line in handle.read().split(b"\n") if line.strip()]


def _is_torn(line: bytes) -> bool:
    """Whether the line is not JSON, as the first part of a record is not."""
    try:
        json.loads(line)
    except ValueError:
        return True
    return False


def _end_line(path: Path) -> None:
    """End the file's last line with a newline if a crash left it without one."""
    with path.open("rb+") as handle:
        if handle.seek(0, os.SEEK_END) == 0:
            return
        handle.seek(-1, os.SEEK_END)
        if handle.read(1) != b"\n":
            handle.write(b"\n")
            handle.flush()
            os.fsync(handle.fileno())


class AuditTrail:
    """Append to and read the trail under ``directory``.

    Args:
        directory: The trail's directory (see :func:`audit_dir`).
        max_bytes: Size at which a file is closed and the next one started.
    """

    def __init__(self, directory: Path, *, max_bytes: int = MAX_BYTES) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.lock = FileLock(directory / ".lock", timeout_s=30.0)

    def _tail(self, files: list[Path]) -> tuple[int, str, bytes | None]:
        """The last whole record's ``seq`` and digest, and the torn line after it if any."""
        found: list[bytes] = []
        for path in reversed(files):  # the torn line may be the first of a new file
            found[:0] = _last_lines(path)[-2:]
            if len(found) >= 2:
                break
        found, torn = found[-2:], None
        if found and _is_torn(found[-1]):
            torn = found.pop()
            if found and _is_torn(found[-1]):
                raise DamagedStoreError(
                    f"the audit trail in {self.directory} ends in two lines that are not "
                    "records; run `multiagent audit verify`"
                )
            if not self._crashed_mid_append(found[-1] if found else None):
                raise DamagedStoreError(
                    f"the last line of the audit trail in {self.directory} was cut short after "
                    "it was written; run `multiagent audit verify`"
                )
        if not found:
            return 0, GENESIS, torn
        return int(json.loads(found[-1])["seq"]), line_digest(found[-1]), torn

    def _crashed_mid_append(self, whole: bytes | None) -> bool:
        """Whether HEAD agrees that the line after ``whole`` (the last whole record) is an
        append cut off by a crash: HEAD names ``whole``, or the record before it."""
        try:
            head = json.loads((self.directory / HEAD_FILE).read_bytes())
        except FileNotFoundError:
            return whole is None
        except ValueError:
            return False
        if whole is None or not isinstance(head, dict):
            return False
        seq = int(json.loads(whole)["seq"])
        named = head.get("seq") == seq and head.get("hash") == line_digest(whole)
        return named or head.get("seq") == seq - 1

    def append(self, record: dict[str, Any]) -> dict[str, Any]:
        """Add one record at the end of the chain; return it as written."""
        self.directory.mkdir(parents=True, exist_ok=True)
        with self.lock.exclusive():
            files = trail_files(self.directory)
            seq, prev, torn = self._tail(files)
            if files:
                _end_line(files[-1])
            target = files[-1] if files else self.directory / "audit-000001.jsonl"
            if target.exists() and target.stat().st_size >= self.max_bytes:
                number = int(_NAME.match(target.name).group(1)) + 1  # type: ignore[union-attr]
                target = self.directory / f"audit-{number:06d}.jsonl"
            written = {**record, "seq": seq + 1, "prev": prev}
            if torn is not None:
                written["torn"] = line_digest(torn)
            line = _seal(written)
            with target.open("ab") as handle:
                handle.write(line + b"\n")
                handle.flush()
                os.fsync(handle.fileno())
            head = {"seq": seq + 1, "hash": line_digest(line), "file": target.name}
            atomic_write_bytes(self.directory / HEAD_FILE, _canonical(head))
        return json.loads(line)  # type: ignore[no-any-return]

    def lines(self) -> Iterator[tuple[Path, int, bytes]]:
        """Every line: its file, its line number in that file, its bytes."""
        for path in trail_files(self.directory):
            with path.open("rb") as handle:
                for number, raw in enumerate(handle, start=1):
                    yield path, number, raw.rstrip(b"\n")

    def records(self) -> list[dict[str, Any]]:
        """Every record that parses, in order."""
        out = []
        for _path, _number, raw in self.lines():
            with contextlib.suppress(ValueError):
                out.append(json.loads(raw))
        return out


@dataclass(frozen=True)
class Verdict:
    """What :func:`verify_trail` found."""

    ok: bool
    lines: int
    files: int
    problem: str | None = None
    file: str | None = None
    line: int | None = None
    seq: int | None = None
    torn: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {**self.__dict__, "torn": list(self.torn)}


def verify_trail(directory: Path) -> Verdict:
    """Walk the chain from the first line; stop at the first line that breaks it.

    A torn line (see the module's docstring) does not break it when it is the trail's last line
    or the record after it names its digest; the verdict lists it in ``torn``.
    """
    trail = AuditTrail(directory)
    files = trail_files(directory)
    prev, seq, count = GENESIS, 0, 0
    torn: list[str] = []
    pending: tuple[Path, int, bytes] | None = None  # a torn line the next record must name

    def broken(path: Path, number: int, problem: str) -> Verdict:
        return Verdict(False, count, len(files), problem, path.name, number, seq + 1)

    for path, number, raw in trail.lines():
        try:
            record = json.loads(raw)
        except ValueError:
            if pending is not None:
                return broken(*pending[:2], "not a JSON record")
            pending = (path, number, raw)
            continue
        if not isinstance(record, dict) or _seal(record) != raw:
            return broken(path, number, "altered (its hash does not match its content)")
        if pending is not None:
            if record.get("torn") != line_digest(pending[2]):
                return broken(*pending[:2], "not a JSON record")
            torn.append(f"{pending[0].name} line {pending[1]}")
            pending = None
        elif "torn" in record:
            return broken(path, number, "it names a torn line before it that is not there")
        if record.get("seq") != seq + 1:
            return broken(path, number, f"out of sequence (seq {record.get('seq')!r})")
        if record.get("prev") != prev:
            return broken(path, number, "the line before it was removed, altered or reordered")
        prev, seq, count = line_digest(raw), seq + 1, count + 1
    if pending is not None:  # a crash mid-append; the next append sets it aside
        torn.append(f"{pending[0].name} line {pending[1]}")
    head_path = directory / HEAD_FILE
    if head_path.is_file():
        try:
            head = json.loads(head_path.read_bytes())
        except ValueError:
            head = None
        if not isinstance(head, dict):
            return Verdict(False, count, len(files), "HEAD is not a JSON record", HEAD_FILE)
        # HEAD one line behind is a kill between the append and its HEAD update
        matches = head.get("seq") == seq and head.get("hash") == prev
        if not matches and head.get("seq") != seq - 1:
            return Verdict(
                False,
                count,
                len(files),
                f"HEAD says the trail ends at line seq {head.get('seq')!r}, it ends at {seq}: "
                "lines were cut off the end",
                HEAD_FILE,
            )
    elif count:
        return Verdict(False, count, len(files), "HEAD is missing", HEAD_FILE)
    return Verdict(True, count, len(files), torn=tuple(torn))


def now_iso() -> str:
    """The time of a record: UTC, microseconds."""
    return datetime.now(UTC).isoformat()


__all__ = [
    "AUDIT_DIR",
    "AuditTrail",
    "Verdict",
    "audit_dir",
    "current_user",
    "now_iso",
    "trail_files",
    "verify_trail",
]
