"""The audit trail: one record per run and administrative command, hash-chained, rotated by size,
with no raw PII; ``audit verify`` names the first removed, reordered or altered line."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from multiagent.audit import AuditTrail, audit_dir, trail_files, verify_trail
from multiagent.cli import app
from multiagent.persistence.checkpointer import checkpoint_path
from multiagent.policies import load_settings

runner = CliRunner()
EMAIL = "jane.roe@example.org"


def _trail() -> Path:
    return audit_dir(load_settings())


def _records() -> list[dict[str, Any]]:
    return AuditTrail(_trail()).records()


def _verify() -> tuple[int, dict[str, Any]]:
    result = runner.invoke(app, ["audit", "verify", "--json"])
    return result.exit_code, json.loads(result.stdout)


def _fill(n: int, *, max_bytes: int = 1024 * 1024) -> AuditTrail:
    trail = AuditTrail(_trail(), max_bytes=max_bytes)
    for i in range(n):
        trail.append({"command": "test", "n": i})
    return trail


def test_a_run_and_admin_commands_each_leave_one_record() -> None:
    ran = runner.invoke(app, ["run", "Summarise the plan", "--thread", "t-audit", "--json"])
    assert ran.exit_code == 0, ran.output
    assert runner.invoke(app, ["persistence", "prune", "--json"]).exit_code == 0
    assert runner.invoke(app, ["persistence", "status", "--json"]).exit_code == 0  # read-only
    records = _records()
    assert [r["command"] for r in records] == ["run", "persistence prune"]
    run = records[0]
    assert run["thread_id"] == "t-audit"
    assert run["outcome"] == "ok"
    assert run["exit_code"] == 0
    usage = json.loads(ran.stdout)["usage"]
    assert run["tokens"] == usage["input_tokens"] + usage["output_tokens"]
    assert run["cost_usd"] > 0
    assert run["profile"] == "dev_balanced"
    assert run["policy"] == "balanced"
    assert run["who"]
    assert [r["seq"] for r in records] == [1, 2]
    # the correlation id is the run's own, as its checkpoints' metadata carry it
    conn = sqlite3.connect(checkpoint_path(load_settings()))
    try:
        stored = {
            json.loads(m)["correlation_id"]
            for (m,) in conn.execute("SELECT metadata FROM checkpoints")
        }
    finally:
        conn.close()
    assert stored == {run["correlation_id"]}
    assert _verify() == (
        0,
        {
            "ok": True,
            "lines": 2,
            "files": 1,
            "problem": None,
            "file": None,
            "line": None,
            "seq": None,
            "torn": [],
        },
    )


def test_a_generated_thread_id_is_recorded_and_no_task_text_is() -> None:
    ran = runner.invoke(app, ["run", f"Write to {EMAIL} about the budget", "--json"])
    assert ran.exit_code == 0, ran.output
    (record,) = _records()
    assert record["thread_id"] == json.loads(ran.stdout)["thread_id"]
    raw = b"".join(p.read_bytes() for p in trail_files(_trail()))
    assert EMAIL.encode() not in raw
    assert b"budget" not in raw
    assert "task" in record["options"]  # the option's name, never its value


def test_a_thread_id_holding_pii_is_redacted() -> None:
    # a thread id is [A-Za-z0-9._-]: an IBAN fits it, an e-mail address does not
    iban = "DE89370400440532013000"
    ran = runner.invoke(app, ["validate", "The sky is blue.", "--thread", iban, "--json"])
    assert ran.exit_code in (0, 3, 4), ran.output  # passed, consensus failed, inconclusive
    raw = b"".join(p.read_bytes() for p in trail_files(_trail()))
    assert iban.encode() not in raw
    assert _records()[0]["command"] == "validate"


def test_bad_input_changes_nothing_not_even_the_trail(isolated_env: Path) -> None:
    result = runner.invoke(app, ["run", "x", "--budget", "-1"])
    assert result.exit_code == 2
    assert not _trail().exists()


def test_a_failed_command_is_recorded_with_its_exit_code(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MULTIAGENT_ENV", "dev_cost")  # 0.0017 covers one call, not the run
    args = ["run", "Plan a product launch for a small bakery", "--agents", "critic"]
    result = runner.invoke(app, [*args, "--budget", "0.0017", "--memory", "off"])
    assert result.exit_code == 1, result.output
    (record,) = _records()
    assert record["outcome"] == "failed"
    assert record["exit_code"] == 1


@pytest.mark.parametrize("damage", ["remove", "reorder", "alter", "truncate_end", "drop_first"])
def test_verify_names_the_first_broken_line(damage: str) -> None:
    _fill(6)
    (path,) = trail_files(_trail())
    lines = path.read_bytes().splitlines(keepends=True)
    expected_line = {"remove": 3, "reorder": 3, "alter": 4, "truncate_end": None, "drop_first": 1}
    if damage == "remove":
        del lines[2]
    elif damage == "reorder":
        lines[2], lines[3] = lines[3], lines[2]
    elif damage == "alter":
        lines[3] = lines[3].replace(b'"n":3', b'"n":9')
    elif damage == "truncate_end":
        del lines[-1]
    else:
        del lines[0]
    path.write_bytes(b"".join(lines))
    code, verdict = _verify()
    assert code == 1
    assert verdict["ok"] is False
    assert verdict["line"] == expected_line[damage]
    text = runner.invoke(app, ["audit", "verify"])
    assert text.exit_code == 1
    assert text.stderr.count("\n") == 1
    assert text.stderr.startswith("audit trail broken at ")


def test_rotation_by_size_keeps_one_chain_across_files() -> None:
    trail = _fill(40, max_bytes=2000)
    files = trail_files(_trail())
    assert len(files) > 3
    assert all(f.stat().st_size < 2000 + 400 for f in files)
    assert [r["n"] for r in trail.records()] == list(range(40))
    assert verify_trail(_trail()).ok
    # a whole middle file removed breaks the chain at the first line after it
    files[1].unlink()
    verdict = verify_trail(_trail())
    assert not verdict.ok
    assert verdict.file == files[2].name
    assert verdict.line == 1


def test_a_kill_between_append_and_head_update_still_verifies() -> None:
    _fill(3)
    head = _trail() / "HEAD"
    before = head.read_bytes()
    _fill(1)
    head.write_bytes(before)  # as if the process died before HEAD was replaced
    assert verify_trail(_trail()).ok
    _fill(1)  # the next append repairs HEAD
    assert verify_trail(_trail()).lines == 5


def test_show_prints_the_last_records() -> None:
    _fill(5)
    result = runner.invoke(app, ["audit", "show", "--last", "2", "--json"])
    assert result.exit_code == 0
    assert [r["n"] for r in json.loads(result.stdout)["records"]] == [3, 4]


def test_a_command_that_writes_warns_when_its_record_cannot_be_written() -> None:
    settings = load_settings()
    settings.home.mkdir(parents=True, exist_ok=True)
    audit_dir(settings).write_bytes(b"")  # a file where the trail's directory goes
    pruned = runner.invoke(app, ["persistence", "prune", "--json"])
    assert pruned.exit_code == 0, pruned.output
    assert "warning: the audit trail could not be written" in pruned.stderr


def _tear(path: Path) -> bytes:
    """Append the first part of a record and no newline, as a process killed mid-append does."""
    torn = b'{"command":"persistence prune","correlation_id":"5f1'
    with path.open("ab") as handle:
        handle.write(torn)
    return torn


def test_a_torn_last_line_is_set_aside_and_the_trail_goes_on() -> None:
    _fill(3)
    (path,) = trail_files(_trail())
    torn = _tear(path)
    code, verdict = _verify()  # a crash, not tampering: HEAD names the last whole record
    assert (code, verdict["ok"], verdict["lines"]) == (0, True, 3)
    assert verdict["torn"] == ["audit-000001.jsonl line 4"]
    pruned = runner.invoke(app, ["persistence", "prune", "--json"])
    assert pruned.exit_code == 0, pruned.output
    assert "audit trail could not be written" not in pruned.stderr
    _fill(1)
    records = _records()
    assert [r["seq"] for r in records] == [1, 2, 3, 4, 5]
    assert records[3]["command"] == "persistence prune"
    lines = path.read_bytes().split(b"\n")
    assert lines[3] == torn  # kept where it was, on a line of its own
    code, verdict = _verify()
    assert (code, verdict["ok"], verdict["lines"]) == (0, True, 5)
    assert verdict["torn"] == ["audit-000001.jsonl line 4"]
    text = runner.invoke(app, ["audit", "verify"])
    assert text.exit_code == 0
    assert "1 torn line set aside" in text.stdout
    assert "audit-000001.jsonl line 4" in text.stdout


def test_a_whole_last_record_without_its_newline_is_kept_in_the_chain() -> None:
    _fill(3)
    (path,) = trail_files(_trail())
    path.write_bytes(path.read_bytes().rstrip(b"\n"))  # killed before the newline
    _fill(1)
    verdict = verify_trail(_trail())
    assert (verdict.ok, verdict.lines, verdict.torn) == (True, 4, ())
    assert [r["n"] for r in _records()] == [0, 1, 2, 0]


@pytest.mark.parametrize("damage", ["alter_record", "alter_torn", "insert_garbage"])
def test_tampering_is_still_found_around_a_set_aside_line(damage: str) -> None:
    _fill(3)
    (path,) = trail_files(_trail())
    _tear(path)
    _fill(2)
    lines = path.read_bytes().splitlines(keepends=True)
    if damage == "alter_record":
        lines[1] = lines[1].replace(b'"n":1', b'"n":7')
    elif damage == "alter_torn":
        lines[3] = lines[3].replace(b"prune", b"vacuum")
    else:
        lines.insert(1, b'{"command":"test"\n')
    path.write_bytes(b"".join(lines))
    verdict = verify_trail(_trail())
    assert not verdict.ok
    assert verdict.line == {"alter_record": 2, "alter_torn": 4, "insert_garbage": 2}[damage]


def test_a_record_cut_short_after_its_append_is_tampering_not_a_crash() -> None:
    from multiagent.errors import DamagedStoreError

    _fill(3)
    (path,) = trail_files(_trail())
    path.write_bytes(path.read_bytes()[:-40])  # HEAD says line 3 was written whole
    before = path.read_bytes()
    verdict = verify_trail(_trail())
    assert not verdict.ok
    assert "cut off the end" in str(verdict.problem)
    with pytest.raises(DamagedStoreError, match="audit verify"):
        _fill(1)
    assert path.read_bytes() == before
