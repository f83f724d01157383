"""``run | meeting | validate`` refuse a budget no call of theirs fits: one line, exit 2,
nothing stored; a resumed run words its stop with the user's budget."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from multiagent.cli import app

runner = CliRunner()
TASK = "Plan a product launch for a small bakery"


def _refused(args: list[str], home: Path, *, kept: set[str]) -> str:
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert {p.name for p in home.iterdir()} == kept  # no thread, no spend, no trail
    return lines[0]


def test_a_node_allowance_beyond_the_budget_is_refused_before_anything_runs(
    isolated_env: Path,
) -> None:
    isolated_env.mkdir()
    (isolated_env / "multiagent.toml").write_text(
        "[models.max_output_tokens]\nsynthesize = 100000\n", encoding="utf-8"
    )
    line = _refused(
        ["run", TASK, "--no-stream", "--memory", "off", "--budget", "0.05"],
        isolated_env,
        kept={"multiagent.toml"},
    )
    assert "budget $0.05 (from --budget) cannot cover one call of node synthesize" in line
    assert "models.max_output_tokens.synthesize" in line


def test_the_profile_budget_is_checked_too(isolated_env: Path) -> None:
    isolated_env.mkdir()
    (isolated_env / "multiagent.toml").write_text(
        "[models.max_output_tokens]\nwork = 10000000\n", encoding="utf-8"
    )
    line = _refused(["run", TASK, "--memory", "off"], isolated_env, kept={"multiagent.toml"})
    assert "(from profile dev_balanced budget_usd) cannot cover one call of node work" in line


@pytest.mark.parametrize("command", ["run", "meeting"])
def test_a_refusal_names_no_model_the_command_does_not_call(
    isolated_env: Path, command: str
) -> None:
    isolated_env.mkdir()
    line = _refused(
        [command, TASK, "--memory", "off", "--budget", "0.00001"], isolated_env, kept=set()
    )
    assert "gpt-3.5-turbo" not in line  # only the validators call the fast tier
    assert "cannot cover one call of node" in line


def test_a_resumed_stop_names_the_given_budget_and_the_earlier_spend(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MULTIAGENT_ENV", "dev_cost")  # 0.0017 covers one call, not the run
    args = ["run", TASK, "--agents", "critic", "--memory", "off", "--no-stream"]
    stopped = runner.invoke(app, [*args, "--thread", "b1", "--budget", "0.0017"])
    assert stopped.exit_code == 1, stopped.output
    again = runner.invoke(
        app, ["run", "--thread", "b1", "--resume", "--budget", "0.0017", "--no-stream"]
    )
    assert again.exit_code == 1, again.output
    text = " ".join(again.stdout.split())
    assert "budget of $0.0017 reached: spent $0.000" in text
    assert "before this session and $0.000000 in it" in text


def test_a_local_batch_budget_no_validator_call_fits_is_refused_before_it_is_stored(
    isolated_env: Path,
) -> None:
    isolated_env.mkdir()
    items = isolated_env.parent / "items.jsonl"
    items.write_text('{"id": "a", "text": "The bakery opened in 1990."}\n', encoding="utf-8")
    line = _refused(
        ["validate", "--batch", str(items), "--budget", "0", "--no-stream"],
        isolated_env,
        kept=set(),
    )
    assert "budget $0 (from --budget) cannot cover one call of node validate" in line
