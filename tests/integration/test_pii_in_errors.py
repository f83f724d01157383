"""Errors are stored redacted under a profile that redacts: a provider's error may echo what it
was sent (an ``Authorization`` header, a contact), and a failed step's error is kept in the
checkpoint's writes by LangGraph and in a validator's failure note by the graph."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from langgraph.graph import END, START, StateGraph
from typing_extensions import TypedDict

from multiagent.nodes.failures import describe_error
from multiagent.persistence.checkpointer import open_checkpointer
from multiagent.persistence.crypto import DataKey
from multiagent.policies import load_settings
from tests.integration._pii_scan import PII_TEXT, RAW, leaks, stored_bytes

ECHO = f"Error code: 400 - {{'error': 'bad request', 'echo': '{PII_TEXT}'}}"


class _State(TypedDict):
    task: str


def _fail(state: _State) -> dict[str, Any]:
    raise ValueError(ECHO)


def _run_failing_step(env: str) -> None:
    graph = StateGraph(_State)
    graph.add_node("work", _fail)
    graph.add_edge(START, "work")
    graph.add_edge("work", END)
    with open_checkpointer(load_settings(env=env)) as saver:
        app = graph.compile(checkpointer=saver)
        with pytest.raises(ValueError):
            app.invoke({"task": "t"}, {"configurable": {"thread_id": "t-1"}})


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encrypted"])
def test_a_failed_steps_error_is_stored_redacted_when_the_profile_redacts(
    isolated_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, encrypted: bool
) -> None:
    key = DataKey.generate()
    if encrypted:
        monkeypatch.setenv("MULTIAGENT_ENCRYPTION_KEY", key.as_text())
    _run_failing_step("prod_balanced")
    assert leaks(stored_bytes(isolated_env, tmp_path)) == []
    with open_checkpointer(load_settings(env="prod_balanced")) as saver:
        (written,) = [w for w in saver.get_tuple(_thread()).pending_writes if w[1] == "__error__"]
    assert "ValueError(" in written[2]
    assert "[REDACTED_EMAIL]" in written[2]


def test_without_redaction_the_error_is_stored_as_raised(
    isolated_env: Path, tmp_path: Path
) -> None:
    _run_failing_step("dev_balanced")  # the default profiles redact nothing, and say so
    assert leaks(stored_bytes(isolated_env, tmp_path)) != []


def test_a_failure_note_is_redacted_when_the_profile_redacts() -> None:
    error = ValueError(ECHO)
    note = describe_error(error, redact=True)
    assert note.startswith("ValueError: Error code: 400")
    assert not [value for value in RAW.values() if value in note]
    assert RAW["email"] in describe_error(error)


def _thread() -> Any:
    return {"configurable": {"thread_id": "t-1"}}
