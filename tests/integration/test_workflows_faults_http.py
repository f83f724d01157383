"""An agent failing past its retries while the others answer, through the ``openai`` provider
against the simulator server on 127.0.0.1, and what ``--resume`` then runs.

A proxy in front of the simulator (:mod:`tests.integration._fault_proxy`) answers 500 to the
chosen agents' requests; the simulator's own ``/sim/stats`` counts what was served, so "no paid
call repeated" is what the server saw, not what our books say.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from multiagent.cli import app
from multiagent.graphs.inputs import orchestration_input, validation_input
from multiagent.graphs.run_events import WorkflowEvent
from multiagent.graphs.runner import run_workflow
from multiagent.nodes.context import build_context
from multiagent.persistence.checkpointer import open_checkpointer
from multiagent.policies import load_settings
from tests.integration._fault_proxy import FaultProxy, served_calls, served_through_proxy

runner = CliRunner()
TEXT = "The bakery opened in 1990. It sells bread and pastries, and employs three bakers."
OTHER = "The mill grinds rye on Tuesdays and wheat on Fridays, and sells flour by the sack."


@pytest.fixture
def served(isolated_env: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, FaultProxy]]:
    """:func:`~tests.integration._fault_proxy.served_through_proxy`, two attempts per call."""
    with served_through_proxy(monkeypatch) as served:
        yield served


def _cli(*args: str) -> tuple[int, dict[str, Any]]:
    result = runner.invoke(app, [*args, "--json"])
    assert result.stdout.lstrip().startswith("{"), result.output
    return result.exit_code, json.loads(result.stdout)


def test_validation_short_of_quorum_resumes_only_its_failed_validators(
    served: tuple[str, FaultProxy],
) -> None:
    sim, proxy = served
    proxy.fail("logical_consistency")
    proxy.fail("completeness")
    code, first = _cli("validate", TEXT, "--thread", "v-short")
    # one of three answered, quorum 2: no verdict yet, and the run says how to complete it
    assert (code, first["status"], first["output"]["status"]) == (4, "completed", "inconclusive")
    assert first["output"]["failed"] == ["completeness", "logical_consistency"]
    assert "--resume runs only them again" in first["message"]
    assert proxy.refused == {"logical_consistency": 2, "completeness": 2}
    assert served_calls(sim) == 1
    [kept] = first["verdicts"]

    proxy.heal()
    code, back = _cli("validate", "--thread", "v-short", "--resume")
    assert served_calls(sim) == 1 + 2  # the two that failed, and only they
    assert proxy.forwarded == {"factual_accuracy": 1, "logical_consistency": 1, "completeness": 1}
    result = back["output"]
    assert (result["responded"], result["failed"], back["failures"]) == (3, [], [])
    assert kept in back["verdicts"]  # the verdict paid for before stands
    assert result["status"] in ("passed", "failed")
    assert code in (0, 3)
    assert back["this_run"]["calls"] == 2
    assert back["message"] == ""

    # a thread with nothing left to retry resumes to nothing
    code, again = _cli("validate", "--thread", "v-short", "--resume")
    assert served_calls(sim) == 3
    assert again["this_run"]["calls"] == 0
    assert again["output"] == result


def test_an_unanswered_item_resumes_without_revalidating_the_answered_ones(
    served: tuple[str, FaultProxy],
) -> None:
    sim, proxy = served
    proxy.fail(text="grinds rye")  # every validator of the second item
    settings = load_settings()
    context = build_context(settings)
    inputs = validation_input([TEXT, OTHER], settings=settings, agents=context.agents)
    with open_checkpointer(settings) as saver:
        down = run_workflow(
            "validation", inputs, context=context, checkpointer=saver, thread_id="v-item"
        )
        assert down.status == "failed"
        assert "item 2" in down.message
        assert served_calls(sim) == 3
        proxy.heal()
        back = run_workflow(
            "validation", None, context=build_context(settings), checkpointer=saver,
            thread_id="v-item", resume=True,
        )  # fmt: skip
    assert back.status == "completed"
    assert served_calls(sim) == 3 + 3  # item 2's validators; item 1's verdicts are not bought again
    assert back.ledger.totals()["calls"] == 3
    assert [r["responded"] for r in back.values["results"]] == [3, 3]
    assert len(back.values["verdicts"]) == 6
    assert back.values["failures"] == []


def test_orchestration_resume_runs_the_failed_agent_and_the_synthesis_only(
    served: tuple[str, FaultProxy],
) -> None:
    sim, proxy = served
    proxy.fail("critic")
    team = "researcher,critic,analyst"
    code, first = _cli("run", "Plan a bakery's move", "--agents", team, "--thread", "o-f")
    assert (code, first["status"]) == (1, "failed")
    assert sorted(c["agent"] for c in first["contributions"]) == ["analyst", "researcher"]
    assert "output" not in first or not first["output"]  # no synthesis of a partial team
    assert served_calls(sim) == 3
    assert proxy.forwarded.get("synthesizer") is None

    proxy.heal()
    code, back = _cli("run", "--thread", "o-f", "--resume")
    assert (code, back["status"]) == (0, "completed")
    assert served_calls(sim) == 3 + 2
    assert proxy.forwarded == {
        "planner": 1, "researcher": 1, "analyst": 1, "critic": 1, "synthesizer": 1,
    }  # fmt: skip
    assert sorted(c["agent"] for c in back["contributions"]) == ["analyst", "critic", "researcher"]


def test_meeting_resumes_at_the_turn_that_failed(served: tuple[str, FaultProxy]) -> None:
    sim, proxy = served
    proxy.fail("critic", after=1)  # speaks in round 1, fails in round 2
    code, first = _cli("meeting", "Open on Sundays?", "--rounds", "2", "--thread", "m-f")
    assert (code, first["status"]) == (1, "failed")
    assert served_calls(sim) == 6  # 3 + moderator, then researcher and analyst of round 2

    proxy.heal()
    code, back = _cli("meeting", "--thread", "m-f", "--resume")
    assert (code, back["status"]) == (0, "completed")
    assert served_calls(sim) == 6 + 3  # the critic's turn, the moderator, the summary
    assert proxy.forwarded == {
        "researcher": 2, "analyst": 2, "critic": 2, "moderator": 2, "secretary": 1,
    }  # fmt: skip


def test_the_terminal_names_the_failed_validators_and_the_resume_command(
    served: tuple[str, FaultProxy],
) -> None:
    _, proxy = served
    proxy.fail("completeness")
    result = runner.invoke(app, ["validate", TEXT, "--thread", "v-hint"])
    assert result.exit_code in (0, 3), result.output  # two of three answered: quorum met
    lines = " ".join(result.stdout.split())
    # the validator's step is shown failed, as its agent line is, not as done
    assert "✗ validate · completeness no verdict: OpenAIAPIError" in lines
    assert "✓ validate · completeness" not in lines
    assert "✓ validate · factual_accuracy" in lines
    assert (
        "validator completeness gave no verdict (see failures); --resume runs only it again: "
        "multiagent validate --thread v-hint --resume"
    ) in lines


def test_a_resumed_step_shows_only_the_tasks_that_run_again(
    served: tuple[str, FaultProxy],
) -> None:
    _, proxy = served
    proxy.fail("critic")
    settings = load_settings()
    context = build_context(settings)
    team = ["researcher", "critic", "analyst"]
    inputs = orchestration_input("Plan a bakery's move", agents=context.agents, team=team)
    with open_checkpointer(settings) as saver:
        down = run_workflow(
            "orchestration", inputs, context=context, checkpointer=saver, thread_id="o-shown"
        )
        assert down.status == "failed"
        proxy.heal()
        events: list[WorkflowEvent] = []
        back = run_workflow(
            "orchestration", None, context=build_context(settings), checkpointer=saver,
            thread_id="o-shown", resume=True, on_event=events.append,
        )  # fmt: skip
    assert back.status == "completed"
    # the researcher and the analyst finished before the stop: not shown starting again
    started = [e.label for e in events if e.kind == "start"]
    assert started == ["work · critic", "synthesize"]
    assert [e.label for e in events if e.kind == "end"] == started


def test_a_malformed_verdict_is_a_failed_validator_and_resume_asks_it_again(
    served: tuple[str, FaultProxy],
) -> None:
    sim, proxy = served
    proxy.garble("completeness")
    code, first = _cli("validate", TEXT, "--thread", "v-garbled")
    # the two that answered decide (quorum 2); the malformed one is named, with why
    assert first["output"]["responded"] == 2
    assert first["output"]["failed"] == ["completeness"]
    [failure] = first["failures"]
    assert failure["validator"] == "completeness"
    assert "StructuredOutputError" in failure["error"]
    assert sorted(v["validator"] for v in first["verdicts"]) == [
        "factual_accuracy",
        "logical_consistency",
    ]
    ladder = proxy.forwarded["completeness"]  # every step of the structured-output ladder
    assert ladder > 1
    assert served_calls(sim) == 2 + ladder

    proxy.heal()
    code, back = _cli("validate", "--thread", "v-garbled", "--resume")
    assert served_calls(sim) == 2 + ladder + 1
    assert (back["output"]["responded"], back["failures"]) == (3, [])
    assert code == {"passed": 0, "failed": 3}[back["output"]["status"]]
