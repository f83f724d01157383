"""With redaction on, no raw PII anywhere: every workflow run with PII in every input, then every
byte under MULTIAGENT_HOME (snapshots and backups decompressed, every cell of every SQLite
database read, Chroma's full-text index and the diskcache files included), every ``--json``
document and line printed, every log record and every span exported over OTLP is searched for
each raw value. The same run with redaction off must find them, so the search is known to see.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from typer.testing import CliRunner

from multiagent.cli import app
from tests.integration._pii_scan import PII_TEXT, RAW, kept_after_run, leaks, stored_bytes


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
    kept = kept_after_run(isolated_env, tmp_path / "scratch", caplog.records, otlp_bodies)
    # the search sees what it must: the data directory holds all these stores
    names = kept.file_names
    assert {"checkpoints.sqlite", "chroma.sqlite3", "metrics.sqlite", "cache.db"} <= names
    assert any("snapshots" in where and "|gunzip" in where for where, _ in kept.files)
    assert any("backups" in where for where, _ in kept.files)
    assert any(":embedding_fulltext_search" in where for where, _ in kept.files)
    assert kept.traced
    assert leaks(iter([*kept.everything(), *outputs])) == []
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
