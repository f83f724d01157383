"""What the PII tests search for and where: the raw values, one text carrying them all, and every
byte under a data directory (archives unpacked, every SQLite cell read)."""

from __future__ import annotations

import gzip
import io
import json
import logging
import shutil
import sqlite3
import tarfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

RAW = {
    "email": "jürgen.müller@beispiel.de",
    "phone": "089/1234567",
    "card": "4111 1111 1111 1111",
    "iban": "DE89 3704 0044 0532 0130 00",
    "ssn": "536-22-8841",
    "ipv4": "192.0.2.10",
    "ipv6": "2001:db8::8a2e:370:7334",
    "token": "ghp_" + "Q7x2" * 9,
    "password": "Sommer2024!",
}
# one sentence carrying every kind, in each language the corpus has
PII_TEXT = (
    f"Contact {RAW['email']} or {RAW['phone']}; card {RAW['card']}, IBAN {RAW['iban']}, "
    f"SSN {RAW['ssn']}, host {RAW['ipv4']} / {RAW['ipv6']}, token {RAW['token']}, "
    f"Passwort: {RAW['password']}"
)


def _needles() -> dict[str, bytes]:
    """Each raw value in the forms a store might keep it: as is, JSON-escaped, compacted."""
    found: dict[str, bytes] = {}
    for kind, value in RAW.items():
        forms = {value, json.dumps(value)[1:-1]}
        if kind in ("card", "iban"):
            forms.add(value.replace(" ", ""))
        for n, form in enumerate(sorted(forms)):
            found[f"{kind}#{n}"] = form.encode()
    return found


def _unpacked(name: str, data: bytes) -> Iterator[tuple[str, bytes]]:
    """``data`` and whatever is inside it: gzip, zip and tar members, recursively."""
    yield name, data
    if data[:2] == b"\x1f\x8b":
        yield from _unpacked(name + "|gunzip", gzip.decompress(data))
    elif data[:4] == b"PK\x03\x04":
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            for member in archive.namelist():
                yield from _unpacked(f"{name}|{member}", archive.read(member))
    elif len(data) > 262 and data[257:262] == b"ustar":
        with tarfile.open(fileobj=io.BytesIO(data)) as archive:
            for info in archive.getmembers():
                handle = archive.extractfile(info)
                if handle is not None:
                    yield from _unpacked(f"{name}|{info.name}", handle.read())


def _sqlite_cells(path: Path, scratch: Path) -> Iterator[tuple[str, bytes]]:
    """Every cell of every table (FTS shadow tables too) of a copy of the database."""
    copy = scratch / f"{len(list(scratch.iterdir()))}.sqlite"
    shutil.copy(path, copy)
    for suffix in ("-wal", "-shm"):
        if Path(f"{path}{suffix}").exists():
            shutil.copy(f"{path}{suffix}", f"{copy}{suffix}")
    connection = sqlite3.connect(copy)
    try:
        tables = [
            r[0] for r in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")
        ]
        for table in tables:
            try:
                rows = connection.execute(f'SELECT * FROM "{table}"').fetchall()
            except sqlite3.OperationalError:
                continue  # a virtual table whose module is not loaded here; its shadows are read
            for row in rows:
                for cell in row:
                    if isinstance(cell, str):
                        yield f"{path}:{table}", cell.encode()
                    elif isinstance(cell, bytes):
                        yield from _unpacked(f"{path}:{table}", cell)
    finally:
        connection.close()


def stored_bytes(home: Path, scratch: Path) -> Iterator[tuple[str, bytes]]:
    """Every byte under ``home``: files as they are, unpacked, and SQLite databases cell by cell."""
    for path in sorted(home.rglob("*")):
        if not path.is_file():
            continue
        data = path.read_bytes()
        yield from _unpacked(str(path), data)
        if data[:16] == b"SQLite format 3\x00":
            yield from _sqlite_cells(path, scratch)


def leaks(sources: Iterator[tuple[str, bytes]]) -> list[str]:
    """``where: kind`` for every raw value found."""
    needles = _needles()
    return sorted(
        {f"{where}: {kind}" for where, data in sources for kind, n in needles.items() if n in data}
    )


@dataclass(frozen=True)
class Kept:
    """Everything a run left behind: stored bytes, log messages and exported spans."""

    files: list[tuple[str, bytes]]
    logged: list[tuple[str, bytes]]
    traced: list[tuple[str, bytes]]

    @property
    def file_names(self) -> set[str]:
        """Base names of the stored files searched (a database's cells count as its file)."""
        return {Path(where.split(":")[0].split("|")[0]).name for where, _ in self.files}

    def everything(self) -> Iterator[tuple[str, bytes]]:
        """Every source searched, in one stream."""
        return iter([*self.files, *self.logged, *self.traced])


def kept_after_run(
    home: Path, scratch: Path, records: list[logging.LogRecord], otlp_bodies: list[bytes]
) -> Kept:
    """What to search once the commands ran: ``home``'s bytes, the log records, the OTLP bodies."""
    scratch.mkdir(exist_ok=True)
    return Kept(
        files=list(stored_bytes(home, scratch)),
        logged=[(f"log {r.name}", r.getMessage().encode()) for r in records],
        traced=[("otlp", body) for body in otlp_bodies],
    )
