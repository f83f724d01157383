"""An id is stored as given (a checkpoint's key, the live runs, memory's metadata, the audit
trail, trace metadata, a queue entry): with a profile that redacts, an id holding personal data
is refused before anything is stored, naming it with placeholders; without redaction it is used
as before, and the ids the project generates never hold any."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from typer.testing import CliRunner

from multiagent.cli import app
from multiagent.errors import UsageError
from multiagent.graphs.inputs import orchestration_input
from multiagent.graphs.runner import run_workflow
from multiagent.graphs.workflows import new_thread_id
from multiagent.nodes.context import build_context
from multiagent.policies import load_settings
from multiagent.safety import find_pii_in_id
from tests.integration._pii_scan import stored_bytes

IP, CARD = "203.0.113.77", "5500000000000004"


def _commands(tmp_path: Path) -> dict[str, list[str]]:
    batch = tmp_path / "items.jsonl"
    batch.write_text(json.dumps({"id": "a", "text": "The sky is blue."}) + "\n", encoding="utf-8")
    return {
        "run": ["run", "Plan the launch", "--agents", "researcher", "--thread", f"host-{IP}"],
        "meeting": ["meeting", "Launch date", "--rounds", "1", "--thread", f"ip_{IP}"],
        "validate": ["validate", "The sky is blue.", "--thread", f"card-{CARD}"],
        "batch": ["validate", "--batch", str(batch), "--thread", f"b-{CARD}"],
        # refused before the queue (Redis) is asked for
        "queued run": ["run", "Plan the launch", "--queue", "q", "--thread", f"ip_{IP}"],
        "queued batch": ["validate", "--batch", str(batch), "--queue", "q", "--thread", CARD],
    }


def _raw_stored(home: Path, scratch: Path) -> list[str]:
    scratch.mkdir(exist_ok=True)
    return sorted(
        where for where, data in stored_bytes(home, scratch) if IP.encode() in data
        or CARD.encode() in data
    )  # fmt: skip


@pytest.mark.parametrize(
    "command", ["run", "meeting", "validate", "batch", "queued run", "queued batch"]
)
def test_a_redacting_profile_refuses_an_id_holding_personal_data(
    command: str, isolated_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MULTIAGENT_ENV", "prod_balanced")
    result = CliRunner().invoke(app, _commands(tmp_path)[command])
    assert result.exit_code == 2, result.output
    error = result.stderr.strip().splitlines()
    assert len(error) == 1
    assert "holds personal data" in error[0]
    assert "[REDACTED_" in error[0]
    assert IP not in result.output
    assert CARD not in result.output
    assert _raw_stored(isolated_env, tmp_path / "scratch") == []


@pytest.mark.parametrize("command", ["run", "validate", "batch"])
def test_without_redaction_the_id_is_used_as_given(
    command: str, isolated_env: Path, tmp_path: Path
) -> None:
    result = CliRunner().invoke(app, _commands(tmp_path)[command])  # dev_balanced: no redaction
    assert result.exit_code in (0, 3, 4), result.output
    assert _raw_stored(isolated_env, tmp_path / "scratch")  # the search sees the id


def test_the_python_api_refuses_it_before_the_run_is_listed(isolated_env: Path) -> None:
    settings = load_settings(env="prod_balanced")
    context = build_context(settings)
    inputs = orchestration_input("Plan the launch", agents=context.agents, team=["researcher"])
    with pytest.raises(UsageError, match=r"thread id 'host-\[REDACTED_IP\]'"):
        run_workflow(
            "orchestration", inputs, context=context, checkpointer=None, thread_id=f"host-{IP}"
        )
    assert not (isolated_env / "runs.sqlite").exists()


def test_generated_ids_never_read_as_personal_data(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ten hexadecimal digits may all be decimal ones, which read as a phone number."""
    drawn = iter([uuid.UUID("4686174443" + "0" * 22), uuid.UUID("3f9c2a61b0" + "0" * 22)])
    monkeypatch.setattr(uuid, "uuid4", lambda: next(drawn))
    assert find_pii_in_id("run-4686174443")
    assert new_thread_id("orchestration") == "run-3f9c2a61b0"


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        (f"host-{IP}", "ip"),
        (f"ip_{IP}", "ip"),
        (f"card-{CARD}", "card"),
        ("cust_DE89370400440532013000", "iban"),
        ("t-ghp_" + "Q7x2" * 9, "secret"),
    ],
)
def test_values_joined_into_an_id_are_found(value: str, kind: str) -> None:
    assert [finding.kind for finding in find_pii_in_id(value)] == [kind]


@pytest.mark.parametrize("value", ["run-3f9c2a61b0", "release-2026-11-28", "v1.2.3", "batch-7"])
def test_ordinary_ids_hold_nothing(value: str) -> None:
    assert find_pii_in_id(value) == []


def test_item_ids_that_redaction_would_make_equal_are_refused(
    isolated_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two e-mail addresses as item ids both become ``[REDACTED_EMAIL]``: results keyed alike.
    Refused naming the items by position; one such id alone is kept, redacted."""
    monkeypatch.setenv("MULTIAGENT_ENV", "prod_balanced")
    emails = ["anna@example.com", "budi@example.co.id"]
    batch = tmp_path / "items.jsonl"
    lines = [json.dumps({"id": email, "text": "The sky is blue."}) for email in emails]
    batch.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = CliRunner().invoke(app, ["validate", "--batch", str(batch), "--json"])
    assert result.exit_code == 2, result.output
    assert result.stderr.strip() == (
        "error: items 1 and 2 have ids that both read '[REDACTED_EMAIL]' once personal data is "
        "redacted (the profile redacts it); key the items by ids without personal data, or "
        "leave 'id' out"
    )
    batch.write_text(lines[0] + "\n", encoding="utf-8")
    result = CliRunner().invoke(app, ["validate", "--batch", str(batch), "--json"])
    assert result.exit_code in (0, 3, 4), result.output
    assert [entry["id"] for entry in json.loads(result.stdout)["results"]] == ["[REDACTED_EMAIL]"]
