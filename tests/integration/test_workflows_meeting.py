"""Meetings end to end on the simulated model: rounds, transcript, consensus stop, summary."""

from __future__ import annotations

from typing import Any

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import BaseMessage

from multiagent.graphs.inputs import meeting_input
from multiagent.graphs.run_events import WorkflowEvent
from multiagent.graphs.runner import run_workflow
from multiagent.graphs.workflows import compile_workflow
from multiagent.nodes.context import build_context
from multiagent.persistence.checkpointer import open_checkpointer
from multiagent.policies import load_settings

TOPICS = (
    "Should the bakery open on Sundays?",
    "Which supplier should we pick for flour?",
    "Do we need a website?",
    "Raise bread prices?",
)


class PromptRecorder(BaseCallbackHandler):
    def __init__(self) -> None:
        self.prompts: list[str] = []

    def on_chat_model_start(
        self, serialized: dict[str, Any], messages: list[list[BaseMessage]], **kwargs: Any
    ) -> None:
        self.prompts.extend(m.text for batch in messages for m in batch if m.type == "human")


def test_rounds_end_early_on_consensus_or_after_the_last_round() -> None:
    settings = load_settings()
    context = build_context(settings)
    threshold = settings.profile.validation.consensus_threshold
    graph = compile_workflow("meeting")
    held: dict[str, int] = {}
    for topic in TOPICS:
        inputs = meeting_input(topic, agents=context.agents, rounds=3)
        values = graph.invoke(inputs, context=context)
        transcript, assessments = values["transcript"], values["assessments"]
        rounds = max(u["round"] for u in transcript)
        held[topic] = rounds
        assert len(transcript) == 3 * rounds  # everyone speaks once per round, in order
        assert [u["agent"] for u in transcript[:3]] == ["researcher", "analyst", "critic"]
        assert [a["round"] for a in assessments] == list(range(1, rounds + 1))
        for assessment in assessments[:-1]:
            assert not assessment["consensus"]
        last = assessments[-1]
        if rounds < 3:
            assert last["consensus"]
        if last["consensus"]:
            assert last["agreement"] >= threshold
        else:
            assert rounds == 3
        assert values["consensus"] == last["consensus"]
        assert "Decisions:" in values["summary"]
        assert "Action items:" in values["summary"]
    assert min(held.values()) == 1, "no topic reached consensus early"
    assert max(held.values()) == 3, "every topic reached consensus early"


def test_each_speaker_sees_the_transcript_so_far() -> None:
    settings = load_settings()
    context = build_context(settings)
    recorder = PromptRecorder()
    inputs = meeting_input("Do we need a website?", agents=context.agents, rounds=2)
    values = compile_workflow("meeting").invoke(inputs, {"callbacks": [recorder]}, context=context)
    speaking = [p for p in recorder.prompts if "This is a meeting" in p]
    assert len(speaking) == len(values["transcript"])
    for index, prompt in enumerate(speaking):
        earlier = values["transcript"][:index]
        assert all(u["text"] in prompt for u in earlier)
        if index == 0:
            assert "(nobody has spoken yet)" in prompt
    summary_prompt = next(p for p in recorder.prompts if "three parts" in p)
    assert all(u["text"] in summary_prompt for u in values["transcript"])


def test_summary_streams_and_meeting_is_a_resumable_thread() -> None:
    settings = load_settings()
    events: list[WorkflowEvent] = []
    context = build_context(settings)
    inputs = meeting_input(
        "Do we need a website?", agents=context.agents, participants=["critic", "writer"], rounds=1
    )
    with open_checkpointer(settings) as saver:
        outcome = run_workflow(
            "meeting",
            inputs,
            context=context,
            checkpointer=saver,
            thread_id="m-1",
            on_event=events.append,
        )
        again = run_workflow(
            "meeting", None, context=build_context(settings), checkpointer=saver,
            thread_id="m-1", resume=True,
        )  # fmt: skip
    assert outcome.status == "completed"
    tokens = [e for e in events if e.kind == "token"]
    assert {e.node for e in tokens} == {"speak", "summarize"}  # every turn streams
    summary = [e.text for e in tokens if e.node == "summarize"]
    assert "".join(summary) == outcome.values["summary"]
    turns = [e for e in tokens if e.node == "speak"]
    assert [e.agent for e in turns if e.agent != turns[0].agent][:1] == ["writer"]
    spoken = "".join(e.text for e in turns)
    assert spoken == "".join(u["text"] for u in outcome.values["transcript"])
    # the moderator's judgement reaches the custom stream as it is made
    judged = [e.data for e in events if e.kind == "custom" and e.data["type"] == "moderator"]  # type: ignore[index]
    assert [(j["round"], j["agreement"]) for j in judged if j] == [
        (a["round"], a["agreement"]) for a in outcome.values["assessments"]
    ]
    # the meeting as chat: each turn, the judgement and the summary, named after who spoke
    chat = outcome.values["messages"]
    assert [m.name for m in chat] == ["critic", "writer", "moderator", "secretary"]
    assert chat[-1].content == outcome.values["summary"]
    labels = [e.label for e in events if e.kind == "start"]
    assert labels[:3] == [
        "speak · critic (round 1)",
        "speak · writer (round 1)",
        "moderate (round 1)",
    ]
    assert again.status == "completed"
    assert again.ledger.calls == []  # a finished thread resumed runs nothing
    assert again.values["summary"] == outcome.values["summary"]
