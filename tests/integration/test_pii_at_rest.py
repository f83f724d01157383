"""With redaction on, no raw PII anywhere: every workflow run with PII in every input, then every
byte under MULTIAGENT_HOME (snapshots and backups decompressed, every cell of every SQLite
database read, Chroma's full-text index and the diskcache files included), every ``--json``
document and line printed, every log record and every span exported over OTLP is searched for
each raw value. The same run with redaction off must find them, so the search is known to see.
"""

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
from pathlib import Path

import pytest
from fastapi import FastAPI, Request, Response
from typer.testing import CliRunner

from multiagent._serve import serve_in_thread
from multiagent.cli import app

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


@pytest.fixture
def otlp_bodies(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[bytes]]:
    """An OTLP/HTTP receiver on loopback; the CLI's spans are exported to it."""
    bodies: list[bytes] = []
    receiver = FastAPI()

    @receiver.post("/v1/traces")
    async def traces(request: Request) -> Response:
        bodies.append(await request.body())
        return Response(b"", media_type="application/x-protobuf")

    with serve_in_thread(receiver, host="127.0.0.1", port=0, what="otlp") as url:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", url)
        yield bodies


def _every_workflow(tmp_path: Path) -> list[tuple[str, bytes]]:
    """Run, meeting, validate, validate --batch, threads, snapshot and backup; their output."""
    batch = tmp_path / "items.jsonl"
    batch.write_text(
        "\n".join(
            json.dumps({"id": f"i{n}", "text": f"{lang} {PII_TEXT}"}, ensure_ascii=False)
            for n, lang in enumerate(["Please check:", "Tolong periksa:", "Bitte prüfen:"])
        ),
        encoding="utf-8",
    )
    runner = CliRunner()
    commands = [
        ["run", f"Plan the follow-up: {PII_TEXT}", "--agents", "researcher,critic", "--json"],
        ["meeting", f"Rapat tentang pelanggan: {PII_TEXT}", "--rounds", "1", "--json"],
        ["validate", f"Die Angaben sind korrekt: {PII_TEXT}", "--json"],
        ["validate", "--batch", str(batch), "--json"],
        ["threads", "list", "--json"],
        ["persistence", "snapshot", "--json"],
        ["persistence", "backup", "--json"],
    ]
    outputs: list[tuple[str, bytes]] = []
    for args in commands:
        result = runner.invoke(app, args)
        # validate's exit code is its consensus: 0 passed, 3 failed, 4 inconclusive
        assert result.exit_code in ((0, 3, 4) if args[0] == "validate" else (0,)), (
            args,
            result.output,
        )
        outputs.append((" ".join(args[:2]), result.output.encode()))
        if args[-1] == "--json" and args[0] != "persistence":
            json.loads(result.stdout)
    thread = json.loads(outputs[0][1])["thread_id"]
    shown = runner.invoke(app, ["threads", "show", thread, "--json"])
    assert shown.exit_code == 0, shown.output
    outputs.append(("threads show", shown.output.encode()))
    return outputs


@pytest.mark.slow
def test_nothing_raw_is_stored_printed_logged_or_traced(
    isolated_env: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    otlp_bodies: list[bytes],
) -> None:
    monkeypatch.setenv("MULTIAGENT_ENV", "prod_balanced")
    caplog.set_level(logging.DEBUG)
    outputs = _every_workflow(tmp_path)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    files = list(stored_bytes(isolated_env, scratch))
    # the search sees what it must: the data directory holds all these stores
    names = {Path(where.split(":")[0].split("|")[0]).name for where, _ in files}
    assert {"checkpoints.sqlite", "chroma.sqlite3", "metrics.sqlite", "cache.db"} <= names
    assert any("snapshots" in where and "|gunzip" in where for where, _ in files)
    assert any("backups" in where for where, _ in files)
    assert any(":embedding_fulltext_search" in where for where, _ in files)
    assert otlp_bodies
    logged = [(f"log {r.name}", r.getMessage().encode()) for r in caplog.records]
    traced = [("otlp", body) for body in otlp_bodies]
    assert leaks(iter([*files, *outputs, *logged, *traced])) == []
    # and what was redacted is visible as such
    assert b"[REDACTED_EMAIL]" in outputs[0][1]


@pytest.mark.slow
def test_the_search_finds_raw_values_when_redaction_is_off(
    isolated_env: Path, tmp_path: Path, otlp_bodies: list[bytes]
) -> None:
    outputs = _every_workflow(tmp_path)  # dev_balanced: redaction off
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    found = leaks(iter([*stored_bytes(isolated_env, scratch), *outputs]))
    kinds = {entry.rsplit(": ", 1)[1].split("#")[0] for entry in found}
    assert kinds == set(RAW)
    assert any("checkpoints.sqlite" in entry for entry in found)
    assert any("chroma.sqlite3" in entry for entry in found)
    assert any("snapshots" in entry for entry in found)
