"""``--reveal-pii``: with redaction on, the person at the terminal sees their own values again in
the final output, while everything stored, logged or traced holds only numbered placeholders."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from typer.testing import CliRunner

from multiagent.cli import app
from tests.integration._pii_scan import PII_TEXT, RAW, kept_after_run, leaks

#: The simulator echoes the first words of a prompt: the e-mail there reaches every output.
TEXT = f"Mail {RAW['email']} today. {PII_TEXT}"


@pytest.mark.slow
def test_the_final_output_shows_the_values_and_nothing_stored_holds_them(
    isolated_env: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    otlp_bodies: list[bytes],
) -> None:
    monkeypatch.setenv("MULTIAGENT_ENV", "prod_balanced")
    caplog.set_level(logging.DEBUG)
    runner = CliRunner()
    commands = {
        "run": ["run", TEXT, "--agents", "researcher,critic", "--reveal-pii", "--json"],
        "meeting": ["meeting", TEXT, "--rounds", "1", "--reveal-pii", "--json"],
        "validate": ["validate", TEXT, "--reveal-pii", "--json"],
        "summary": ["meeting", TEXT, "--rounds", "1", "--memory", "off", "--reveal-pii"],
    }
    printed: dict[str, str] = {}
    for name, args in commands.items():
        result = runner.invoke(app, args)
        assert result.exit_code in ((0, 3, 4) if name == "validate" else (0,)), result.output
        printed[name] = result.stdout
    reports = {name: json.loads(printed[name]) for name in ("run", "meeting", "validate")}
    # the printed result: the input and the model's echo of it, with the values restored
    assert reports["run"]["task"] == TEXT
    assert reports["meeting"]["topic"] == TEXT
    for name, report in reports.items():
        shown = json.dumps(report, ensure_ascii=False)
        assert RAW["email"] in report["output"] if name != "validate" else RAW["email"] in shown
        assert "<EMAIL_1>" not in shown
        assert "[REDACTED_EMAIL]" not in shown
    # the summary streamed live with placeholders, then printed once more with the values
    live, final = printed["summary"].rsplit("summary ─", 1)
    assert "<EMAIL_1>" in live
    assert RAW["email"] not in live
    assert RAW["email"] in final
    assert "<EMAIL_1>" not in final

    kept = kept_after_run(isolated_env, tmp_path / "scratch", caplog.records, otlp_bodies)
    assert {"checkpoints.sqlite", "chroma.sqlite3", "cache.db"} <= kept.file_names
    assert kept.traced
    assert leaks(kept.everything()) == []
    # what is stored is the placeholder, numbered per kind: the mapping itself is nowhere
    checkpoints = [data for where, data in kept.files if "checkpoints.sqlite" in where]
    assert any(b"<EMAIL_1>" in data for data in checkpoints)
    assert any(b"<PHONE_1>" in data for data in checkpoints)


def test_reveal_pii_is_refused_with_a_batch(isolated_env: Path, tmp_path: Path) -> None:
    batch = tmp_path / "items.jsonl"
    batch.write_text(json.dumps({"id": "a", "text": "hello"}), encoding="utf-8")
    result = CliRunner().invoke(app, ["validate", "--batch", str(batch), "--reveal-pii"])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        "error: --reveal-pii cannot be used with --batch; leave --reveal-pii out"
    ]
    assert not (isolated_env / "checkpoints.sqlite").exists()


def test_reveal_pii_is_documented_in_each_workflows_help() -> None:
    for command in ("run", "meeting", "validate"):
        result = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "200"})
        assert "--reveal-pii" in result.output
