"""Streaming everywhere: a completion-cache hit reaches the stream as tokens, the live view keeps
parallel agents apart under their names, and ``--quiet-agents`` leaves only the final answer."""

from __future__ import annotations

import re
from pathlib import Path

from rich.console import Console
from typer.testing import CliRunner

from multiagent.cli import app
from multiagent.commands._live import LiveView
from multiagent.graphs.inputs import orchestration_input
from multiagent.graphs.run_events import WorkflowEvent
from multiagent.graphs.runner import run_workflow
from multiagent.nodes.context import build_context
from multiagent.persistence.checkpointer import open_checkpointer
from multiagent.policies import load_settings

TASK = "Plan a product launch for a small bakery"


def _stream(thread: str) -> tuple[list[WorkflowEvent], dict[str, str]]:
    settings = load_settings()
    context = build_context(settings)
    inputs = orchestration_input(TASK, agents=context.agents, team=["researcher", "critic"])
    events: list[WorkflowEvent] = []
    with open_checkpointer(settings) as saver:
        outcome = run_workflow(
            "orchestration", inputs, context=context, checkpointer=saver, thread_id=thread,
            on_event=events.append,
        )  # fmt: skip
    texts = {c["agent"]: c["text"] for c in outcome.values["contributions"]}
    texts["synthesizer"] = outcome.values["output"]
    return events, texts


def test_a_cache_hit_streams_its_tokens_as_a_fresh_answer_does() -> None:
    first, texts = _stream("fresh")
    again, cached = _stream("cached")
    assert cached == texts
    hits = [
        e for e in again if e.kind == "custom" and (e.data or {}).get("type") == "agent_finished"
    ]
    # every agent's call came from the cache, the planner's included
    assert {(e.data or {})["agent"] for e in hits if (e.data or {})["cache_hits"] == 1} == {
        "planner",
        *texts,
    }
    for agent, text in texts.items():
        fresh = [e.text for e in first if e.kind == "token" and e.agent == agent]
        replayed = [e.text for e in again if e.kind == "token" and e.agent == agent]
        assert "".join(replayed) == "".join(fresh) == text
        assert len(replayed) > 1  # chunks, not one whole message


def _token(task: str, agent: str, text: str, node: str = "work") -> WorkflowEvent:
    return WorkflowEvent("token", node, agent, text=text, agent=agent, task=task)


def _render(events: list[WorkflowEvent], *, quiet: bool = False) -> str:
    console = Console(record=True, width=200, force_terminal=False)
    view = LiveView(console, quiet_agents=quiet)
    for event in events:
        view(event)
    view.close()
    return console.export_text()


EVENTS = [
    WorkflowEvent("start", "work", "work · a", task="A"),
    WorkflowEvent("start", "work", "work · b", task="B"),
    _token("A", "a", "alpha "),
    _token("B", "b", "beta "),
    _token("A", "a", "one"),
    _token("B", "b", "two"),
    WorkflowEvent("end", "work", "work · b", task="B"),
    WorkflowEvent("end", "work", "work · a", task="A"),
    WorkflowEvent("start", "synthesize", "synthesize", task="S"),
    _token("S", "synthesizer", "final ", node="synthesize"),
    _token("S", "synthesizer", "answer", node="synthesize"),
    WorkflowEvent("end", "synthesize", "synthesize", task="S"),
]


def test_parallel_agents_are_shown_apart_each_under_its_name() -> None:
    text = _render(EVENTS)
    # a's stream is live; b's tokens wait and are shown whole, under b's name, after a's
    assert re.search(r"work · a ─+\nalpha one\n.*work · b ─+\nbeta two\n", text, re.S)
    assert "collaborative output · synthesizer" in text
    assert "final answer" in text


def test_quiet_agents_hides_the_agents_tokens_but_not_the_answer() -> None:
    text = _render(EVENTS, quiet=True)
    assert "alpha" not in text
    assert "beta" not in text
    assert "✓ work · a" in text
    assert "final answer" in text


def test_the_cli_streams_every_agent_and_the_meeting_judgement(isolated_env: Path) -> None:
    runner = CliRunner()
    shown = runner.invoke(
        app, ["meeting", "Do we need a website?", "--participants", "critic,writer",
              "--rounds", "1", "--memory", "off"],
    )  # fmt: skip
    assert shown.exit_code == 0, shown.output
    assert "speak · critic (round 1) ─" in shown.stdout
    assert "speak · writer (round 1) ─" in shown.stdout
    assert "⚖ moderator · round 1" in shown.stdout
    assert "meeting summary · secretary ─" in shown.stdout
    quiet = runner.invoke(
        app, ["meeting", "Do we need a website?", "--participants", "critic,writer",
              "--rounds", "1", "--memory", "off", "--quiet-agents"],
    )  # fmt: skip
    assert quiet.exit_code == 0, quiet.output
    assert "speak · critic (round 1) ─" not in quiet.stdout
    assert "⚖ moderator · round 1" in quiet.stdout
    assert "meeting summary · secretary ─" in quiet.stdout
