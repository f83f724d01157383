"""The Python API redacts where input enters: a thread's checkpoints, its subject in the thread
list, a batch's manifest and what the model was asked hold placeholders, never the raw value."""

from __future__ import annotations

import asyncio
from itertools import cycle
from pathlib import Path
from typing import Any

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Command

from multiagent.graphs.batch import batch_cross_validate
from multiagent.graphs.batch_store import MemoryBatchStore
from multiagent.graphs.execute import execute_workflow
from multiagent.graphs.inputs import orchestration_input
from multiagent.graphs.orchestration import build_orchestration_graph
from multiagent.graphs.redacting import _settings_for
from multiagent.graphs.runner import run_workflow
from multiagent.nodes.context import WorkflowContext, build_context
from multiagent.nodes.state import OrchestrationInput
from multiagent.persistence.checkpointer import open_checkpointer
from multiagent.policies import Settings, load_settings
from tests.integration._pii_scan import stored_bytes

EMAIL, CARD = "siti.rahayu@perusahaan.co.id", "5500 0000 0000 0004"
TASK = f"Draft a reply to {EMAIL} about the charge on {CARD}"


class Prompts(BaseCallbackHandler):
    """Every prompt a chat model was given, as the callbacks (and so any tracer) see it."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def on_chat_model_start(self, serialized: Any, messages: Any, **kwargs: Any) -> None:
        self.seen += [str(m.content) for batch in messages for m in batch]


def _setup(*, redact: bool) -> tuple[Settings, WorkflowContext, OrchestrationInput]:
    settings = load_settings(overrides={"features.pii_redaction": redact})
    context = build_context(settings)
    return settings, context, orchestration_input(TASK, agents=context.agents, team=["researcher"])


def test_run_workflow_stores_and_sends_only_placeholders() -> None:
    _, context, inputs = _setup(redact=True)
    saver = InMemorySaver()
    prompts = Prompts()
    outcome = run_workflow(
        "orchestration", inputs, context=context, checkpointer=saver, thread_id="t-pii",
        callbacks=[prompts],
    )  # fmt: skip
    assert outcome.status == "completed"
    stored = repr([c.checkpoint for c in saver.list(None)])
    assert EMAIL not in stored
    assert CARD not in stored
    assert "[REDACTED_EMAIL]" in outcome.values["task"]
    assert prompts.seen
    assert not any(EMAIL in p or CARD in p for p in prompts.seen)
    assert inputs["task"] == TASK  # the caller's input is not changed


def test_a_reviewers_feedback_is_stored_and_sent_only_as_placeholders() -> None:
    settings = load_settings(overrides={"features.pii_redaction": True})
    context = build_context(settings)
    inputs = orchestration_input(
        "Plan the follow-up call", agents=context.agents, team=["researcher"]
    )
    inputs["require_approval"] = True
    saver = InMemorySaver()
    prompts = Prompts()
    answer = {"approved": True, "feedback": f"ask {EMAIL} first"}
    outcome = run_workflow(
        "orchestration", inputs, context=context, checkpointer=saver, thread_id="t-feedback",
        approver=lambda _plan: answer, callbacks=[prompts],
    )  # fmt: skip
    assert outcome.status == "completed"
    config = {"configurable": {"thread_id": "t-feedback"}}
    stored = repr([(c.checkpoint, c.pending_writes) for c in saver.list(config)])
    assert EMAIL not in stored
    assert "[REDACTED_EMAIL]" in outcome.values["approval"]["feedback"]
    assert any("[REDACTED_EMAIL]" in p for p in prompts.seen)  # the agents got the note
    assert not any(EMAIL in p for p in prompts.seen)
    assert answer["feedback"] == f"ask {EMAIL} first"  # the caller's answer is not changed


def test_redaction_off_keeps_the_input_as_given() -> None:
    _, context, inputs = _setup(redact=False)
    outcome = run_workflow(
        "orchestration", inputs, context=context, checkpointer=None, thread_id="t-raw"
    )
    assert outcome.values["task"] == TASK


def test_execute_workflow_keeps_the_subject_redacted() -> None:
    settings, context, inputs = _setup(redact=True)
    outcome = execute_workflow(
        "orchestration", inputs, settings=settings, context=context, thread_id="t-subject"
    )
    with open_checkpointer(settings) as saver:
        found = saver.get_tuple({"configurable": {"thread_id": outcome.thread_id}})
    assert found is not None
    subject = str(found.metadata.get("subject"))
    assert EMAIL not in subject
    assert "[REDACTED_EMAIL]" in subject


def test_a_batch_manifest_holds_placeholders() -> None:
    settings = load_settings(overrides={"features.pii_redaction": True})
    store = MemoryBatchStore()
    result = batch_cross_validate(
        [f"Customer {EMAIL} paid with {CARD}", "No personal data here."],
        settings=settings, validators=2, store=store, thread_id="b-pii",
    )  # fmt: skip
    manifest = store.manifest("b-pii")
    assert manifest is not None
    assert EMAIL not in repr(manifest.items)
    assert CARD not in repr(manifest.items)
    assert "[REDACTED_CARD]" in manifest.items[0]["text"]
    assert EMAIL not in repr(result)


def _stored(saver: InMemorySaver, thread_id: str) -> str:
    config = {"configurable": {"thread_id": thread_id}}
    return repr([(c.checkpoint, c.pending_writes) for c in saver.list(config)])


@pytest.mark.parametrize("call", ["invoke", "ainvoke", "stream", "astream"])
def test_a_graph_called_directly_stores_only_placeholders(call: str) -> None:
    """A notebook's ``graph.invoke(..., context=...)`` with a checkpointer: LangGraph writes the
    input to the first checkpoint before any node runs, so the compiled graph redacts it."""
    saver = InMemorySaver()
    graph = build_orchestration_graph().compile(checkpointer=saver)
    thread = f"t-direct-{call}"
    config: Any = {"configurable": {"thread_id": thread}}
    given = {"task": TASK, "team": ["researcher"], "planner_picks": False}
    context = {"profile": "prod_balanced", "memory": "off"}
    if call == "invoke":
        graph.invoke(given, config, context=context)
    elif call == "stream":
        assert list(graph.stream(given, config, context=context, stream_mode="updates"))
    else:

        async def run() -> None:
            if call == "ainvoke":
                await graph.ainvoke(given, config, context=context)
            else:
                assert [part async for part in graph.astream(given, config, context=context)]

        asyncio.run(run())
    stored = _stored(saver, thread)
    assert EMAIL not in stored
    assert CARD not in stored
    assert "[REDACTED_EMAIL]" in graph.get_state(config).values["task"]
    assert given["task"] == TASK  # the caller's input is not changed


def test_a_resume_sent_to_a_graph_directly_is_stored_only_as_placeholders() -> None:
    saver = InMemorySaver()
    graph = build_orchestration_graph().compile(checkpointer=saver)
    config: Any = {"configurable": {"thread_id": "t-direct-resume"}}
    context = build_context(load_settings(overrides={"features.pii_redaction": True}))
    given = {"task": "Plan the follow-up call", "team": ["researcher"], "require_approval": True}
    graph.invoke(given, config, context=context)
    assert graph.get_state(config).interrupts  # paused for the reviewer
    graph.invoke(Command(resume={"approved": True, "feedback": f"ask {EMAIL}"}), config,
                 context=context)  # fmt: skip
    assert EMAIL not in _stored(saver, "t-direct-resume")
    assert "[REDACTED_EMAIL]" in graph.get_state(config).values["approval"]["feedback"]


def test_a_profile_without_redaction_stores_the_graphs_input_as_given() -> None:
    saver = InMemorySaver()
    graph = build_orchestration_graph().compile(checkpointer=saver)
    config: Any = {"configurable": {"thread_id": "t-direct-raw"}}
    given = {"task": TASK, "team": ["researcher"], "planner_picks": False}
    graph.invoke(given, config, context={"profile": "dev_cost", "memory": "off"})
    assert graph.get_state(config).values["task"] == TASK


def test_a_state_update_is_redacted_per_the_processs_profile(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``update_state`` takes no context: the process's profile decides (a server's, say)."""
    monkeypatch.setenv("MULTIAGENT_ENV", "prod_balanced")
    _settings_for.cache_clear()
    try:
        saver = InMemorySaver()
        graph = build_orchestration_graph().compile(checkpointer=saver)
        config: Any = {"configurable": {"thread_id": "t-direct-update"}}
        given = {"task": "Plan the follow-up call", "team": ["researcher"]}
        graph.invoke(given, config, context={"memory": "off"})
        graph.update_state(config, {"task": f"Call {EMAIL} first"})
        asyncio.run(graph.aupdate_state(config, {"output": f"Charge {CARD}"}))
    finally:
        _settings_for.cache_clear()
    assert EMAIL not in _stored(saver, "t-direct-update")
    assert CARD not in _stored(saver, "t-direct-update")
    values = graph.get_state(config).values
    assert "[REDACTED_EMAIL]" in values["task"]
    assert "[REDACTED_CARD]" in values["output"]


def test_personal_values_a_model_writes_itself_are_stored_only_as_placeholders(
    isolated_env: Path, tmp_path: Path
) -> None:
    """A model was sent placeholders, yet may write personal values of its own (a contact it
    knows): its answer is redacted before the cache, the checkpoints or memory keep it."""
    answer = f"Escalate to the account owner: {EMAIL}, card {CARD}."
    model = GenericFakeChatModel(messages=cycle([AIMessage(answer)]))
    settings = load_settings(
        env="prod_balanced",
        overrides={"prices": {"GenericFakeChatModel": {"input_per_mtok": 0, "output_per_mtok": 0}}},
    )
    context = build_context(settings, model=model)
    given = {"task": "Plan the follow-up call", "team": ["researcher"], "planner_picks": False}
    with open_checkpointer(settings) as saver:
        graph = build_orchestration_graph().compile(checkpointer=saver)
        state = graph.invoke(given, {"configurable": {"thread_id": "t-answer"}}, context=context)
    assert "[REDACTED_EMAIL]" in state["output"]
    assert EMAIL not in state["output"]
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    files = list(stored_bytes(isolated_env, scratch))
    assert {"checkpoints.sqlite", "cache.db"} <= {Path(w.split(":")[0]).name for w, _ in files}
    raw = [EMAIL.encode(), CARD.encode(), CARD.replace(" ", "").encode()]
    assert not [where for where, data in files if any(value in data for value in raw)]
