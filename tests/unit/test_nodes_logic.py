"""Pure parts of the nodes: plan merging, approval answers, consensus, inputs, batch files."""

from __future__ import annotations

from pathlib import Path

import pytest

from multiagent.errors import UsageError
from multiagent.graphs.batch_file import read_batch_file
from multiagent.graphs.inputs import (
    check_threshold,
    choose_validators,
    meeting_input,
    orchestration_input,
    validation_input,
)
from multiagent.nodes.agents_file import load_agents
from multiagent.nodes.planner import PlanAnswer, PlannedStep, _decision, merge_steps
from multiagent.nodes.state import ValidationItem, ValidatorFailure, Verdict
from multiagent.nodes.validator import (
    distinct_texts,
    failed_validators,
    item_result,
    retry_failed_validators,
    text_key,
)
from multiagent.policies import load_settings

TEAM = ["researcher", "analyst", "critic"]


def _answer(*steps: tuple[str, str]) -> PlanAnswer:
    return PlanAnswer(steps=[PlannedStep(agent=a, subtask=s) for a, s in steps])


def test_merge_steps_keeps_team_order_merges_and_drops_unknowns() -> None:
    answer = _answer(
        ("critic", "risks"), ("ghost", "x"), ("researcher", "facts"), ("critic", "gaps")
    )
    steps = merge_steps(answer, task="T", team=TEAM, pick=True)
    assert steps == [
        {"agent": "researcher", "subtask": "facts"},
        {"agent": "critic", "subtask": "risks; gaps"},
    ]


def test_merge_steps_gives_every_member_a_part_when_the_team_was_chosen() -> None:
    steps = merge_steps(_answer(("critic", "risks")), task="T", team=TEAM, pick=False)
    assert [s["agent"] for s in steps] == TEAM
    assert steps[0]["subtask"] == "T"


def test_merge_steps_reads_a_member_named_in_another_case() -> None:
    answer = _answer(("Critic", "risks"), (" researcher ", "facts"))
    steps = merge_steps(answer, task="T", team=TEAM, pick=False)
    assert steps[0] == {"agent": "researcher", "subtask": "facts"}
    assert {"agent": "critic", "subtask": "risks"} in steps


def test_merge_steps_never_leaves_nobody_working() -> None:
    steps = merge_steps(_answer(("ghost", "x")), task="T", team=TEAM, pick=True)
    assert steps == [{"agent": "researcher", "subtask": "T"}]


@pytest.mark.parametrize(
    ("value", "approved"),
    [
        (True, True),
        (False, False),
        ("yes", True),
        ("no", False),
        ({"approved": True}, True),
        ({"approved": "yes", "feedback": "ok"}, True),
        # a JSON client's string false must not approve (bool("false") is True)
        ({"approved": "false"}, False),
        ({"approved": "no"}, False),
        ({"approved": 1}, False),
        ({"feedback": "too vague"}, False),
        (3, False),
    ],
)
def test_approval_answers(value: object, approved: bool) -> None:
    assert _decision(value)["approved"] is approved


def _verdict(validator: str, passed: bool, confidence: float = 0.8) -> Verdict:
    return Verdict(
        key="k", validator=validator, passed=passed, confidence=confidence,
        issues=[] if passed else ["wrong"], rationale="", cached=False,
    )  # fmt: skip


def test_consensus_against_threshold_over_the_validators_that_answered() -> None:
    item = ValidationItem(id="a", text="t")
    verdicts = [_verdict("v1", True), _verdict("v2", True), _verdict("v3", False)]
    failure = ValidatorFailure(key="k", validator="v4", error="APIError")
    result = item_result(item, verdicts=verdicts, failures=[failure], validators=4, threshold=0.6)
    assert result["status"] == "passed"
    assert result["approval"] == pytest.approx(2 / 3, abs=1e-4)
    assert (result["responded"], result["validators"], result["failed"]) == (3, 4, ["v4"])
    assert result["issues"] == ["v3: wrong"]
    strict = item_result(item, verdicts=verdicts, failures=[], validators=3, threshold=0.7)
    assert strict["status"] == "failed"
    assert not strict["passed"]
    nobody = item_result(item, verdicts=[], failures=[failure], validators=1, threshold=0.5)
    assert nobody["status"] == "inconclusive"


def test_consensus_edges_tie_exact_threshold_and_one_validator() -> None:
    item = ValidationItem(id="a", text="t")
    tie = [_verdict("v1", True), _verdict("v2", False)]
    assert item_result(item, verdicts=tie, failures=[], validators=2, threshold=0.5)["passed"]
    assert not item_result(item, verdicts=tie, failures=[], validators=2, threshold=0.51)["passed"]
    five = [_verdict(f"v{n}", bool(vote)) for n, vote in enumerate([1, 1, 0, 1, 0], start=1)]
    met = item_result(item, verdicts=five, failures=[], validators=5, threshold=0.6)
    assert met["status"] == "passed"  # 3 of 5 is exactly 0.6
    alone = item_result(
        item, verdicts=[_verdict("v1", False)], failures=[], validators=1, threshold=1.0
    )
    assert (alone["status"], alone["responded"], alone["quorum"]) == ("failed", 1, 1)


def test_only_validators_that_failed_and_gave_no_verdict_since_are_retried() -> None:
    items = ["Water boils at 100 C.", "Ice is cold.", "Water  boils at 100 C. "]
    boils, ice = text_key(items[0]), text_key(items[1])
    values = {
        "items": items,
        "verdicts": [
            {**_verdict("v1", True), "key": boils},
            {**_verdict("v2", True), "key": ice},
        ],
        "failures": [
            ValidatorFailure(key=boils, validator="v2", error="APIError"),
            ValidatorFailure(key=ice, validator="v1", error="APIError"),
            ValidatorFailure(key=ice, validator="v2", error="APIError"),  # answered since
            ValidatorFailure(key=boils, validator="v2", error="APIError"),  # the same, once
        ],
    }
    retried = failed_validators(values)
    assert retried == [
        {"key": boils, "text": items[0], "validator": "v2"},
        {"key": ice, "text": items[1], "validator": "v1"},
    ]
    command = retry_failed_validators(values)
    assert command is not None
    assert [send.arg for send in command.goto] == retried  # type: ignore[union-attr]
    assert retry_failed_validators({**values, "failures": []}) is None


def test_identical_texts_share_one_key() -> None:
    items = [
        ValidationItem(id="1", text="Water boils at 100 C."),
        ValidationItem(id="2", text="Water  boils at 100 C. "),
        ValidationItem(id="3", text="Ice is cold."),
    ]
    assert text_key(items[0]["text"]) == text_key(items[1]["text"])
    assert len(distinct_texts(items)) == 2


def test_inputs_are_checked_before_anything_runs() -> None:
    settings = load_settings()  # dev_balanced: 2-3 validators, threshold 0.6
    agents = load_agents(settings)
    assert orchestration_input("  T ", agents=agents)["planner_picks"] is True
    assert orchestration_input("T", agents=agents, team=["critic"])["team"] == ["critic"]
    with pytest.raises(UsageError, match="task is empty"):
        orchestration_input("  ", agents=agents)
    with pytest.raises(UsageError, match="topic is empty"):
        meeting_input("", agents=agents)
    with pytest.raises(UsageError, match="--rounds must be between 1"):
        meeting_input("x", agents=agents, rounds=0)
    assert choose_validators(settings, agents) == [
        "factual_accuracy",
        "logical_consistency",
        "completeness",
    ]
    assert len(choose_validators(settings, agents, count=2)) == 2
    with pytest.raises(UsageError, match="between 1 and 6, got 0"):
        choose_validators(settings, agents, count=0)
    with pytest.raises(UsageError, match="outside what profile dev_balanced"):
        choose_validators(settings, agents, count=6)
    assert check_threshold(settings, None) == 0.6
    for bad in (0.0, 1.5, -1.0):
        with pytest.raises(UsageError, match=r"--threshold must be in \(0, 1\]"):
            check_threshold(settings, bad)
    with pytest.raises(UsageError, match="nothing to validate"):
        validation_input([], settings=settings, agents=agents)
    with pytest.raises(UsageError, match="appears twice"):
        validation_input(
            [ValidationItem(id="a", text="x"), ValidationItem(id="a", text="y")],
            settings=settings,
            agents=agents,
        )
    # the command line's text rule holds for the Python API too (tabs and newlines are text)
    with pytest.raises(UsageError, match="text of item 1 holds the control character U"):
        validation_input(["x \x1b[2J one"], settings=settings, agents=agents)
    with pytest.raises(UsageError, match="task holds the control character"):
        orchestration_input("plan \x07", agents=agents)
    assert validation_input(["a\tb\nc"], settings=settings, agents=agents)["items"][0]["text"] == (
        "a\tb\nc"
    )


def test_batch_file_reports_every_bad_line(tmp_path: Path) -> None:
    path = tmp_path / "batch.jsonl"
    path.write_text(
        '{"id": "a", "text": "fine"}\nnot json\n\n{"id": "b"}\n"a bare string"\n'
        '{"id": "a", "text": "again"}\n[1, 2]\n',
        encoding="utf-8",
    )
    with pytest.raises(UsageError) as caught:
        read_batch_file(path)
    message = str(caught.value)
    for needle in (
        "line 2: not JSON",
        "line 4: no non-empty 'text'",
        "line 6: id 'a' repeats line 1",
        "line 7",
    ):
        assert needle in message
    assert "line 5" not in message  # a JSON string is a valid item
    good = tmp_path / "good.jsonl"
    good.write_text('{"id": "a", "text": "x"}\n"y"\n{"text": "z", "id": 7}\n', encoding="utf-8")
    assert read_batch_file(good) == [
        {"id": "a", "text": "x"},
        {"id": "2", "text": "y"},
        {"id": "7", "text": "z"},
    ]
    with pytest.raises(UsageError, match=r"batch file .* does not exist"):
        read_batch_file(tmp_path / "missing.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n\n", encoding="utf-8")
    with pytest.raises(UsageError, match="has no items"):
        read_batch_file(tmp_path / "empty.jsonl")
