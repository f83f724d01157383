"""Consensus needs a quorum of answering validators; ``validate``'s exit code says how consensus
went; ``--version`` reads the package metadata."""

from __future__ import annotations

import json
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
from langgraph.runtime import Runtime
from typer.testing import CliRunner

from multiagent.cli import app
from multiagent.commands._exit_codes import EXIT_CONSENSUS_FAILED, EXIT_INCONCLUSIVE, exit_code
from multiagent.nodes.context import build_context
from multiagent.nodes.state import ValidationItem, ValidatorFailure, Verdict
from multiagent.nodes.validator import aggregate, item_result, text_key
from multiagent.policies import load_settings
from multiagent.policies.profiles import ValidationConfig

runner = CliRunner()
ITEM = ValidationItem(id="a", text="Water boils at 100 C at sea level.")


def _verdicts(*passed: bool) -> list[Verdict]:
    return [
        Verdict(key=text_key(ITEM["text"]), validator=f"v{n}", passed=p, confidence=0.9,
                issues=[], rationale="", cached=False)
        for n, p in enumerate(passed)
    ]  # fmt: skip


def test_fewer_answers_than_the_quorum_is_inconclusive_however_they_voted() -> None:
    failures = [ValidatorFailure(key="k", validator="v9", error="APIError")] * 2
    alone = item_result(
        ITEM, verdicts=_verdicts(True), failures=failures, validators=3, threshold=0.5, quorum=2
    )
    assert (alone["status"], alone["passed"], alone["quorum"]) == ("inconclusive", False, 2)
    enough = item_result(
        ITEM, verdicts=_verdicts(True, True), failures=[], validators=3, threshold=0.5, quorum=2
    )
    assert enough["status"] == "passed"


def test_the_reported_approval_is_the_share_compared_with_the_threshold() -> None:
    two_of_three = item_result(
        ITEM, verdicts=_verdicts(True, True, False), failures=[], validators=3, threshold=0.6667
    )
    assert two_of_three["status"] == "failed"
    assert two_of_three["approval"] < two_of_three["threshold"]  # it read 0.6667 vs 0.6667
    assert two_of_three["approval"] == 2 / 3


def test_the_quorum_is_the_profiles_minimum_unless_set_and_never_above_the_validators() -> None:
    config = ValidationConfig(validators_min=2, validators_max=4, consensus_threshold=0.6)
    assert [config.quorum_for(n) for n in (1, 2, 4)] == [1, 2, 2]
    strict = config.model_copy(update={"quorum": 3})
    assert [strict.quorum_for(n) for n in (2, 3, 4)] == [2, 3, 3]


def test_aggregate_reads_the_quorum_from_the_run_profile() -> None:
    settings = load_settings(overrides={"validation.quorum": 2})
    runtime: Runtime[Any] = Runtime(context=build_context(settings, analysis_cache=None))
    state: Any = {
        "items": [ITEM], "validators": ["v0", "v1", "v2"], "threshold": 0.5,
        "verdicts": _verdicts(True), "failures": [], "usage": [],
    }  # fmt: skip
    assert aggregate(state, runtime=runtime)["results"][0]["status"] == "inconclusive"  # type: ignore[index]
    state["verdicts"] = _verdicts(True, False)
    assert aggregate(state, runtime=runtime)["results"][0]["status"] == "passed"  # type: ignore[index]


@pytest.mark.parametrize(
    ("status", "statuses", "code"),
    [
        ("completed", ["passed", "passed"], 0),
        ("completed", ["passed", "failed", "inconclusive"], EXIT_CONSENSUS_FAILED),
        ("completed", ["passed", "inconclusive"], EXIT_INCONCLUSIVE),
        ("failed", ["failed"], 1),
        ("interrupted", [], 130),
    ],
)
def test_exit_codes(status: str, statuses: list[str], code: int) -> None:
    assert exit_code(status, [{"status": s} for s in statuses]) == code


def test_validate_exit_code_agrees_with_the_results_and_is_documented(isolated_env: Path) -> None:
    help_text = runner.invoke(app, ["validate", "--help"]).stdout
    assert "3 consensus failed" in " ".join(help_text.split())
    codes = set()
    for text in ("The moon is made of cheese.", "Paris is in France.", "2 + 2 = 5", "Ice is hot."):
        result = runner.invoke(
            app, ["validate", text, "--validators", "3", "--threshold", "1.0", "--json"]
        )
        document = json.loads(result.stdout)
        assert result.exit_code == exit_code("completed", document["results"])
        codes.add(result.exit_code)
    assert EXIT_CONSENSUS_FAILED in codes  # the simulated validators do not all agree


def test_version_is_the_installed_package_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout.strip() == f"multiagent {version('multiagent')}"
