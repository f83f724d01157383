"""The CLI against a real model: llama-cpp-python's server through ``openai``, and ``local``.

Exit codes, schema-valid structured results, non-empty outputs, and the ledger's tokens and cost
equal to what the server itself reported (a recording proxy keeps its responses' ``usage``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result
from typer.testing import CliRunner

from multiagent import load_settings
from multiagent.cli import app
from multiagent.commands._exit_codes import exit_code
from multiagent.nodes.validator import VerdictAnswer
from tests.realmodel._recorder import Recording

pytestmark = [pytest.mark.realmodel, pytest.mark.slow]

runner = CliRunner()
TASK = "Plan a product launch for a small bakery"
OFF = ("--memory", "off")


def cli(*args: str, input: str | None = None) -> Result:
    return runner.invoke(app, list(args), input=input)


def document(result: Result) -> dict[str, Any]:
    text = result.stdout
    parsed: dict[str, Any] = json.loads(text[text.index("{") :])
    return parsed


def assert_verdict_or_no_compliant_answer(doc: dict[str, Any]) -> None:
    """A single text's validation completed, or failed only because the model gave no valid
    verdict at all (SmolLM2-135M does now and then): an item nobody answered is not a verdict,
    so the run stops as failed and resumable (as a batch leaves such an item unfinished)."""
    if doc["status"] == "completed":
        return
    assert doc["status"] == "failed", {k: doc[k] for k in ("status", "error")}
    assert doc["failures"], doc
    assert all("StructuredOutputError" in f["error"] for f in doc["failures"]), doc["failures"]


def assert_usage_is_the_servers(doc: dict[str, Any], recording: Recording) -> None:
    """The run's tokens and cost are exactly what the server reported, priced as configured."""
    usage = doc["usage"]
    prompt, completion = recording.totals()
    # a call the server refused (llama.cpp answers a ``json_schema`` response format with a
    # 500, and the structured ladder moves on) is one call in the ledger, with no tokens
    refused = sum(1 for status in recording.statuses if status != 200)
    answered = len(recording.usages)
    assert answered > 0
    assert answered <= usage["calls"] <= answered + refused
    assert usage["calls"] - answered == doc.get("this_run", {}).get("errors", 0)
    assert (usage["input_tokens"], usage["output_tokens"]) == (prompt, completion)
    assert usage["cost_usd"] == pytest.approx(server_cost(recording), abs=1e-6)


def server_cost(recording: Recording) -> float:
    """What the server reported it used, priced as the profile prices its models."""
    profile = load_settings().profile
    return sum(
        profile.require_price(u["model"]).cost(u["prompt_tokens"], u["completion_tokens"])
        for u in recording.usages
    )


def test_validate_one_text(openai_real: Recording) -> None:
    result = cli("validate", "Bread rises because yeast makes gas.", "--validators", "2", "--json")
    doc = document(result)
    assert_verdict_or_no_compliant_answer(doc)
    # the model's verdicts decide consensus: the exit code is the one documented for it
    assert result.exit_code == exit_code(doc["status"], doc["results"]), result.output
    verdicts = [v for v in doc["verdicts"] if v]
    assert verdicts or doc["status"] == "failed", doc
    for verdict in verdicts:
        VerdictAnswer.model_validate(
            {k: verdict[k] for k in VerdictAnswer.model_fields if k in verdict}
        )
    assert_usage_is_the_servers(doc, openai_real)


def test_run_orchestration(openai_real: Recording) -> None:
    result = cli("run", TASK, "--agents", "researcher", "--no-stream", "--json", *OFF)
    assert result.exit_code == 0, result.output
    doc = document(result)
    assert doc["status"] == "completed", doc.get("error")
    assert doc["output"].strip()
    assert doc["plan"]
    assert all(step["agent"] == "researcher" for step in doc["plan"])
    assert_usage_is_the_servers(doc, openai_real)


def test_meeting_one_round(openai_real: Recording) -> None:
    result = cli("meeting", "Opening hours for a bakery", "--participants", "researcher,critic",
                 "--rounds", "1", "--json", *OFF)  # fmt: skip
    assert result.exit_code == 0, result.output
    doc = document(result)
    assert doc["status"] == "completed", doc.get("error")
    assert doc["output"].strip()
    assert_usage_is_the_servers(doc, openai_real)


def test_streamed_run_prints_real_text(openai_real: Recording) -> None:
    result = cli("run", TASK, "--agents", "researcher", *OFF)
    assert result.exit_code == 0, result.output
    assert openai_real.streamed >= 1  # the synthesis was streamed from the server
    assert "completed" in result.output or "thread" in result.output


def test_validate_batch_of_ten_adapts_to_a_one_at_a_time_server(
    openai_real: Recording, tmp_path: Path
) -> None:
    batch = tmp_path / "items.jsonl"
    lines = [json.dumps({"text": f"A loaf needs {n} grams of flour."}) for n in range(10)]
    batch.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = cli("validate", "--batch", str(batch), "--validators", "2", "--json")
    doc = document(result)
    # SmolLM2-135M now and then gives no valid verdict even after the structured-output
    # ladder's calls and repair (one validator in 10-20 here: "the reply holds no JSON
    # object"); an item whose two validators both fail so is left unfinished and the batch
    # says "failed" (seen once in CI). That is the model's answer, not the runtime's: what
    # this test holds is that no call failed on a timeout of a request queued at the
    # one-at-a-time server, and that the controller's limit came down
    failures = doc["failures"]
    assert not [f for f in failures if "timed out" in f["error"].lower()], failures
    assert not [f for f in failures if "timeout" in f["error"].lower()], failures
    assert doc["status"] in ("completed", "failed"), {k: doc[k] for k in ("status", "error")}
    results = doc["results"]
    assert result.exit_code == exit_code(doc["status"], results), result.output
    assert len(results) + len(doc["unfinished"]) == 10
    assert len(results) >= 8, failures  # one unlucky item, not a run the model failed
    assert all(r["responded"] >= 1 for r in results), results
    # the server serves one request at a time: the first wave queued several at it; once
    # seconds per token rose, the controller's limit fell (to 1-3, probing and cutting again).
    # Where no answer of that wave met an idle server (the first also read the prompt into a
    # cold cache: 11.7 s against 2 s warm, under load), no rise showed and the limit stayed at
    # 6 for the whole batch (seen in CI); the controller then takes one answer alone first
    waves = openai_real.concurrency
    first = max(waves[:8])
    assert len(waves) >= 20
    assert first > 2, waves
    assert max(waves[-5:]) < first, waves
    assert min(waves[8:]) <= 2, waves


def test_approve_then_budget_stop_and_resume(openai_real: Recording) -> None:
    waiting = cli("run", TASK, "--agents", "critic", "--approve", "--thread", "ap", "--json", *OFF)
    assert waiting.exit_code == 0, waiting.output
    assert document(waiting)["status"] == "awaiting_approval"
    resumed = cli("run", "--thread", "ap", "--resume", "--json", *OFF, input="y\n\n")
    assert resumed.exit_code == 0, resumed.output
    assert document(resumed)["status"] == "completed"
    # below the plan's worst case (its prompt and 160 output tokens at gpt-4o-mini's price), so
    # the stop does not hang on how many calls the model's plan takes (one, when it complies)
    stopped = cli("run", TASK, "--agents", "critic", "--budget", "0.0001", "--thread", "bs", *OFF)
    assert stopped.exit_code == 1, stopped.output
    assert "Resume with a larger budget" in stopped.stdout
    done = cli("run", "--thread", "bs", "--resume", "--budget", "1", "--json", *OFF)
    assert done.exit_code == 0, done.output
    assert document(done)["status"] == "completed"


@pytest.mark.usefixtures("local_provider")
def test_local_provider_runs_every_workflow_in_process() -> None:
    run = document(cli("run", TASK, "--agents", "researcher", "--no-stream", "--json", *OFF))
    assert run["status"] == "completed", run.get("error")
    assert run["output"].strip()
    meeting = document(cli("meeting", "Opening hours", "--participants", "researcher,critic",
                           "--rounds", "1", "--json", *OFF))  # fmt: skip
    assert meeting["status"] == "completed", meeting.get("error")
    check = document(cli("validate", "Bread rises because yeast makes gas.", "--json"))
    assert_verdict_or_no_compliant_answer(check)
    for doc in (run, meeting, check):
        assert doc["usage"]["calls"] > 0
        assert doc["usage"]["input_tokens"] > 0
        assert doc["usage"]["output_tokens"] > 0
        assert doc["usage"]["cost_usd"] == 0.0  # local models cost 0, explicitly priced
