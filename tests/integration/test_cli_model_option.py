"""``--model provider:name`` on the workflow commands: the named model answers every agent; a
model that cannot be built is one line and exit 2, with nothing stored."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from multiagent.cli import app

runner = CliRunner()
OFF = ("--memory", "off")


def test_run_with_a_model_of_our_own_provider_records_it_on_every_call() -> None:
    result = runner.invoke(
        app, ["run", "Plan a bakery launch", "--model", "sim:gpt-4o", "--json", *OFF]
    )
    assert result.exit_code == 0, result.output
    used = json.loads(result.stdout)["this_run"]
    # every call priced as gpt-4o ($2.50 / $10 per million), not the profile's gpt-4o-mini
    expected = (used["input_tokens"] * 2.5 + used["output_tokens"] * 10.0) / 1e6
    assert used["calls"] == 5
    assert used["cost_usd"] == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("gpt-4o", "--model 'gpt-4o' is not provider:name"),
        ("anthropic:claude-3-5-haiku-latest", "pip install langchain-anthropic"),
        ("sim:no-such-model", "'no-such-model' has no price"),
    ],
)
def test_a_model_that_cannot_be_used_is_one_line_and_exit_2(
    value: str, message: str, isolated_env: Path
) -> None:
    result = runner.invoke(app, ["run", "Plan a bakery launch", "--model", value, *OFF])
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.output
    assert not (isolated_env / "checkpoints.db").exists()


def test_model_with_batch_is_refused(tmp_path: Path) -> None:
    batch = tmp_path / "items.jsonl"
    batch.write_text('{"id": "a", "text": "x"}\n', encoding="utf-8")
    result = runner.invoke(app, ["validate", "--batch", str(batch), "--model", "sim:gpt-4o"])
    assert result.exit_code == 2
    assert "--model sim:gpt-4o cannot be used with --batch" in result.stderr
