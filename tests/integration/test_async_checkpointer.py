"""The async checkpointer: ``ainvoke`` and ``astream`` on the project's own database.

LangGraph's sync savers raise on async calls, so an async caller (a notebook's ``await``, a
service) needs ``AsyncSqliteSaver`` / ``AsyncPostgresSaver``; these must be the same database,
with the same encryption and private metadata, as the sync ones the CLI uses.
"""

from __future__ import annotations

from typing import Any

import pytest

from multiagent import build_context, open_async_checkpointer, open_checkpointer
from multiagent.graphs.workflows import compile_workflow
from multiagent.persistence.checkpointer import checkpoint_path
from multiagent.persistence.crypto import DataKey
from multiagent.policies import load_settings
from tests.integration.test_encryption_at_rest import MARKER, _postgres_text, _sqlite_cells

TASK = f"Plan a launch for {MARKER}"


def _config(thread: str) -> Any:
    return {"configurable": {"thread_id": thread}}


async def _run_async(thread: str) -> dict[str, Any]:
    settings = load_settings()
    async with open_async_checkpointer(settings) as saver:
        graph = compile_workflow("orchestration", checkpointer=saver)
        final: dict[str, Any] = {}
        async for update in graph.astream(
            {"task": TASK}, _config(thread), context=build_context(settings), stream_mode="values"
        ):
            final = update
        state = await graph.aget_state(_config(thread))
        assert state.values["output"] == final["output"]
        assert len([s async for s in graph.aget_state_history(_config(thread))]) > 3
        return final


def _sync_state(thread: str) -> dict[str, Any]:
    with open_checkpointer(load_settings()) as saver:
        graph = compile_workflow("orchestration", checkpointer=saver)
        return dict(graph.get_state(_config(thread)).values)


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encrypted"])
async def test_an_async_run_is_stored_in_the_sqlite_database_the_cli_reads(
    monkeypatch: pytest.MonkeyPatch, encrypted: bool
) -> None:
    if encrypted:
        monkeypatch.setenv("MULTIAGENT_ENCRYPTION_KEY", DataKey.generate().as_text())
    final = await _run_async("async-1")
    assert final["output"]
    assert _sync_state("async-1")["output"] == final["output"]  # one database for both
    cells = _sqlite_cells(checkpoint_path(load_settings()))
    assert (MARKER.encode() in cells) is not encrypted  # sealed as the sync saver seals


@pytest.mark.postgres
@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encrypted"])
async def test_an_async_run_is_stored_in_postgres_as_the_sync_saver_stores_it(
    monkeypatch: pytest.MonkeyPatch, postgres_url: str, encrypted: bool
) -> None:
    if encrypted:
        monkeypatch.setenv("MULTIAGENT_ENCRYPTION_KEY", DataKey.generate().as_text())
    final = await _run_async("async-pg")
    assert _sync_state("async-pg")["output"] == final["output"]
    # sealed, the inline primitive channels (the task) included
    assert (MARKER.encode() in _postgres_text(postgres_url)) is not encrypted


async def test_the_sync_saver_refuses_async_calls_so_the_async_one_is_needed() -> None:
    with open_checkpointer(load_settings()) as saver:
        graph = compile_workflow("orchestration", checkpointer=saver)
        with pytest.raises(NotImplementedError):
            await graph.aget_state(_config("x"))
