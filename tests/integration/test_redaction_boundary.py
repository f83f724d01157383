"""The Python API redacts where input enters: a thread's checkpoints, its subject in the thread
list, a batch's manifest and what the model was asked hold placeholders, never the raw value."""

from __future__ import annotations

from typing import Any

from langchain_core.callbacks import BaseCallbackHandler
from langgraph.checkpoint.memory import InMemorySaver

from multiagent.graphs.batch import batch_cross_validate
from multiagent.graphs.batch_store import MemoryBatchStore
from multiagent.graphs.execute import execute_workflow
from multiagent.graphs.inputs import orchestration_input
from multiagent.graphs.runner import run_workflow
from multiagent.nodes.context import WorkflowContext, build_context
from multiagent.nodes.state import OrchestrationInput
from multiagent.persistence.checkpointer import open_checkpointer
from multiagent.policies import Settings, load_settings

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
