"""``multiagent run | meeting | validate | threads`` through typer's CliRunner, on the embedded
defaults (simulated provider, SQLite checkpointer under a temporary MULTIAGENT_HOME)."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from multiagent.cli import app

runner = CliRunner()
TASK = "Plan a product launch for a small bakery"
OFF = ("--memory", "off")


def cli(*args: str, input: str | None = None) -> Result:
    return runner.invoke(app, list(args), input=input)


def document(result: Result) -> dict[str, Any]:
    parsed: dict[str, Any] = json.loads(result.stdout)
    return parsed


def _digest(path: Path) -> str:
    """A file's content; for SQLite databases their logical content (pages may be flushed from
    a write-ahead log at any time by a connection the process still holds)."""
    if path.suffix in (".db", ".sqlite"):
        connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            dump = "\n".join(connection.iterdump())
        finally:
            connection.close()
        return hashlib.sha256(dump.encode()).hexdigest()
    return hashlib.sha256(path.read_bytes()).hexdigest()


def stored(home: Path) -> dict[str, str]:
    """Every file under the data directory with a digest of its content."""
    if not home.exists():
        return {}
    return {
        str(path.relative_to(home)): _digest(path)
        for path in sorted(home.rglob("*"))
        if path.is_file() and not path.name.endswith(("-wal", "-shm", "-journal"))
    }


def test_run_json_is_one_document_with_everything(isolated_env: Path) -> None:
    result = cli("run", TASK, "--agents", "researcher,critic", "--json", *OFF)
    assert result.exit_code == 0, result.output
    doc = document(result)
    assert doc["workflow"] == "orchestration"
    assert doc["status"] == "completed"
    assert doc["thread_id"].startswith("run-")
    assert "small bakery" in doc["output"]
    assert [c["agent"] for c in doc["contributions"]] == ["researcher", "critic"]
    for contribution in doc["contributions"]:
        assert contribution["text"]
        assert contribution["calls"] == 1
        assert contribution["input_tokens"] > 0
        assert contribution["cost_usd"] > 0
        assert contribution["seconds"] >= 0
    assert doc["usage"]["calls"] == 4
    # the planner and the synthesizer cost something on top of the agents' contributions
    assert doc["usage"]["cost_usd"] > sum(c["cost_usd"] for c in doc["contributions"])
    assert "cache_hits" in doc["usage"]
    assert doc["timings"]["total_s"] > 0
    assert {n["node"] for n in doc["timings"]["steps"]} == {"plan", "work", "synthesize"}
    threads = document(cli("threads", "list", "--json"))["threads"]
    assert [t["thread_id"] for t in threads] == [doc["thread_id"]]
    assert threads[0]["status"] == "completed"


def test_run_streams_progress_and_tokens(isolated_env: Path) -> None:
    result = cli("run", TASK, "--agents", "analyst,writer", *OFF)
    assert result.exit_code == 0, result.output
    out = result.stdout
    for needle in (
        "▸ plan",
        "✓ plan",
        "▸ work · analyst",
        "✓ work · writer",
        "collaborative output",
    ):
        assert needle in out
    started, ended = out.index("▸ synthesize"), out.index("✓ synthesize")
    text_at = out.index("small bakery", out.index("collaborative output"))
    assert started < text_at < ended  # the synthesis appeared while the node was running
    assert "thread run-" in out


def test_no_stream_prints_only_the_result(isolated_env: Path) -> None:
    result = cli("run", TASK, "--agents", "critic", "--no-stream", *OFF)
    assert result.exit_code == 0, result.output
    assert "▸" not in result.stdout
    assert "collaborative output" in result.stdout
    assert "small bakery" in result.stdout


def test_meeting_and_validate(isolated_env: Path, tmp_path: Path) -> None:
    meeting = cli(
        "meeting", "Should the bakery open on Sundays?", "--participants", "critic,writer",
        "--rounds", "2", "--json", *OFF,
    )  # fmt: skip
    assert meeting.exit_code == 0, meeting.output
    doc = document(meeting)
    assert doc["workflow"] == "meeting"
    assert "Decisions:" in doc["output"]
    assert {t["agent"] for t in doc["transcript"]} == {"critic", "writer"}
    assert 1 <= doc["rounds_held"] <= 2
    assert [c["agent"] for c in doc["contributions"]] == ["critic", "writer"]

    single = cli("validate", "Bread is baked in ovens.", "--validators", "2", "--json")
    assert single.exit_code == 0, single.output
    doc = document(single)
    assert len(doc["verdicts"]) == 2
    assert doc["output"]["status"] in ("passed", "failed")
    assert doc["output"]["threshold"] == 0.6

    batch = tmp_path / "items.jsonl"
    batch.write_text(
        '{"id": "x", "text": "Bread is baked in ovens."}\n{"id": "y", "text": "Ovens are hot."}\n',
        encoding="utf-8",
    )
    many = cli(
        "validate", "--batch", str(batch), "--concurrency", "2", "--threshold", "0.5", "--json"
    )
    assert many.exit_code == 0, many.output
    doc = document(many)
    assert [r["id"] for r in doc["results"]] == ["x", "y"]
    assert all(r["threshold"] == 0.5 for r in doc["results"])
    cached = [v for v in doc["verdicts"] if v["cached"]]
    assert len(cached) == 2  # "x" was validated by the same two validators a moment ago
    table = cli("validate", "--batch", str(batch), "--validators", "3")
    assert table.exit_code == 0, table.output
    assert "Cross-validation" in table.stdout


def test_threads_show_and_history_travel_in_time(isolated_env: Path) -> None:
    doc = document(
        cli("run", TASK, "--agents", "researcher,critic", "--thread", "demo", "--json", *OFF)
    )
    assert doc["thread_id"] == "demo"
    history = document(cli("threads", "history", "demo", "--json"))["checkpoints"]
    assert [c["step"] for c in history] == [3, 2, 1, 0, -1]
    assert history[0]["next"] == []
    after_plan = next(c for c in history if c["step"] == 1)
    assert after_plan["next"] == ["work", "work"]
    then = document(
        cli("threads", "show", "demo", "--checkpoint", after_plan["checkpoint_id"], "--json")
    )
    assert then["checkpoint_id"] == after_plan["checkpoint_id"]
    assert then["status"] == "earlier"  # the thread went past it: not "interrupted" there
    assert then["values"]["contributions"] == []
    assert len(then["values"]["plan"]) == 2
    now = document(cli("threads", "show", "demo", "--json"))
    assert now["status"] == "completed"
    assert len(now["values"]["contributions"]) == 2
    assert now["values"]["output"] == doc["output"]
    human = cli("threads", "show", "demo")
    assert human.exit_code == 0
    assert "contributions" in human.stdout
    assert "demo" in cli("threads", "list").stdout
    assert cli("threads", "history", "demo").exit_code == 0


def test_threads_show_and_history_print_text_as_text_and_ids_whole(isolated_env: Path) -> None:
    task = "Compare [bold]prices[/bold] and [/x] costs"
    assert cli("run", task, "--agents", "critic", "--thread", "brackets", *OFF).exit_code == 0
    human = cli("threads", "show", "brackets")
    assert human.exit_code == 0, human.output  # "[/x]" was read as markup: a traceback
    assert "[bold]prices[/bold]" in human.stdout
    history = cli("threads", "history", "brackets")
    assert history.exit_code == 0, history.output
    ids = document(cli("threads", "history", "brackets", "--json"))["checkpoints"]
    lines = history.stdout.splitlines()
    for checkpoint in ids:  # each whole on its line, as `threads show --checkpoint` needs it
        assert any(line.startswith(checkpoint["checkpoint_id"]) for line in lines)


def test_approval_prompt_then_resume(isolated_env: Path) -> None:
    waiting = cli("run", TASK, "--agents", "critic", "--approve", "--thread", "a1", "--json", *OFF)
    assert waiting.exit_code == 0, waiting.output
    doc = document(waiting)
    assert doc["status"] == "awaiting_approval"
    assert doc["interrupt"]["plan"][0]["agent"] == "critic"
    assert doc["contributions"] == []
    resumed = cli("run", "--thread", "a1", "--resume", "--json", *OFF, input="y\nfocus on cost\n")
    assert resumed.exit_code == 0, resumed.output
    # CliRunner echoes the typed answers into stdout (a terminal would echo them on the tty)
    doc = json.loads(resumed.stdout[resumed.stdout.index("{") :])
    assert doc["status"] == "completed"
    assert doc["approval"] == {"approved": True, "feedback": "focus on cost"}
    assert "Approve this plan?" in resumed.stderr
    rejected = cli("run", TASK, "--agents", "critic", "--approve", *OFF, input="n\n")
    assert rejected.exit_code == 0
    assert "rejected" in rejected.stdout


def test_budget_stop_then_resume_with_a_larger_budget(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # gpt-3.5-turbo on every answering tier: 0.0017 covers one call's worst case, not the run's
    monkeypatch.setenv("MULTIAGENT_ENV", "dev_cost")
    stopped = cli("run", TASK, "--agents", "critic", "--budget", "0.0017", "--thread", "b1", *OFF)
    assert stopped.exit_code == 1
    assert "budget of $0.0000 reached" in stopped.stdout or "budget of" in stopped.stdout
    assert "Resume with a larger budget" in stopped.stdout
    assert "--budget USD" in " ".join(stopped.stdout.split())
    doc = document(cli("threads", "show", "b1", "--json"))
    assert doc["status"] == "budget_exceeded"
    done = cli("run", "--thread", "b1", "--resume", "--budget", "1", "--json", *OFF)
    assert done.exit_code == 0, done.output
    assert document(done)["status"] == "completed"


def test_a_stop_by_the_daily_cap_says_how_to_lift_the_cap(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A larger budget for the run does not lift the project's daily cap: the advice names
    the cap, not --budget."""
    monkeypatch.setenv("MULTIAGENT_ENV", "dev_cost")
    # one call's worst case fits the cap; the run's calls together do not
    monkeypatch.setenv("MULTIAGENT_BUDGET__DAILY_USD", "0.0017")
    stopped = cli("run", TASK, "--agents", "critic", "--thread", "d1", *OFF)
    assert stopped.exit_code == 1, stopped.output
    said = " ".join(stopped.stdout.split())
    assert "project budget of" in said
    assert "daily_usd" in said
    assert "--budget USD" not in said
    assert "multiagent run --thread d1 --resume" in said


def test_a_thread_running_in_another_process_is_not_resumed_beside_it(
    isolated_env: Path,
) -> None:
    from multiagent.observability.live import live_writer

    assert (
        cli("run", TASK, "--agents", "critic", "--thread", "busy", "--no-stream", *OFF).exit_code
        == 0
    )
    live_writer(isolated_env).flush()
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        with sqlite3.connect(isolated_env / "runs.sqlite") as conn:  # as that process's run left it
            conn.execute(
                "UPDATE runs SET status = 'running', pid = ? WHERE thread_id = 'busy'", (other.pid,)
            )
        before = stored(isolated_env)
        refused = cli("run", "--thread", "busy", "--resume", "--no-stream", *OFF)
        assert refused.exit_code == 2, refused.output
        assert refused.stderr.strip().splitlines() == [
            f"error: thread 'busy' is running in process {other.pid}; wait for it to end, or stop "
            "it and then resume"
        ]
        assert stored(isolated_env) == before
    finally:
        other.kill()
        other.wait()
    # a process that died mid-run leaves its row 'running': its thread resumes
    resumed = cli("run", "--thread", "busy", "--resume", "--no-stream", *OFF)
    assert resumed.exit_code == 0, resumed.output


def test_threads_list_and_show_a_thread_another_process_runs_as_running(
    isolated_env: Path,
) -> None:
    from multiagent.observability.live import live_writer

    args = ("run", TASK, "--agents", "critic", "--approve", "--thread", "busy", "--json", *OFF)
    assert cli(*args).exit_code == 0  # waiting at the plan: its latest checkpoint has a next
    assert cli("run", "--thread", "busy", "--resume", "--json", *OFF, input="y\n\n").exit_code == 0
    live_writer(isolated_env).flush()
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        with sqlite3.connect(isolated_env / "runs.sqlite") as conn:
            conn.execute(
                "UPDATE runs SET status = 'running', pid = ? WHERE thread_id = 'busy'", (other.pid,)
            )
        (row,) = document(cli("threads", "list", "--json"))["threads"]
        assert row["status"] == "running"
        assert document(cli("threads", "show", "busy", "--json"))["status"] == "running"
        assert "busy  orchestration  running" in cli("threads", "list").stdout
    finally:
        other.kill()
        other.wait()
    (row,) = document(cli("threads", "list", "--json"))["threads"]
    assert row["status"] == "completed"


def test_agents_file_adds_an_agent(isolated_env: Path, tmp_path: Path) -> None:
    agents = tmp_path / "agents.toml"
    agents.write_text(
        '[agents.economist]\nrole = "You are the analyst for economics: prices and trade-offs."\n'
        'description = "economic analysis"\n',
        encoding="utf-8",
    )
    result = cli(
        "run", TASK, "--agents", "economist", "--agents-file", str(agents), "--json", *OFF
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert document(result)["contributions"][0]["agent"] == "economist"
    assert document(result)["contributions"][0]["text"].startswith(("Analysis", "Breaking"))


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("run", "  "), "the task is empty"),
        (("run", TASK, "--agents", "researcher,bogus"), "unknown agent 'bogus'; valid: researcher"),
        (("run", TASK, "--budget", "-1"), "--budget must be at least 0"),
        (("run", TASK, "--budget", "nan"), "invalid budget nan (from --budget)"),
        (("run", TASK, "--budget", "inf"), "invalid budget inf (from --budget)"),
        (("run", TASK, "--budget", "0.00001"), "(from --budget) cannot cover one call of node"),
        (("run", TASK, "--memory", "brain"), "unknown --memory 'brain'"),
        (("run", "--resume"), "--resume needs --thread"),
        (("run", "--thread", "ghost", "--resume"), "unknown thread 'ghost'"),
        (("meeting", ""), "the topic is empty"),
        (("meeting", "x", "--rounds", "0"), "--rounds must be between 1 and 20, got 0"),
        (("meeting", "x", "--participants", "safety"), "unknown participant 'safety'"),
        (("validate", "x", "--validators", "0"), "--validators must be between 1 and 6, got 0"),
        (("validate", "x", "--validators", "7"), "--validators must be between 1 and 6, got 7"),
        (("validate", "x", "--validators", "5"), "outside what profile dev_balanced"),
        (("validate", "x", "--threshold", "0"), "--threshold must be in (0, 1], got 0.0"),
        (("validate", "x", "--threshold", "1.5"), "--threshold must be in (0, 1], got 1.5"),
        (("validate", "x", "--concurrency", "0"), "--concurrency must be between 1 and 64"),
        (("validate",), "give TEXT or --batch FILE"),
        (("threads", "show", "ghost"), "no threads yet"),
    ],
)
def test_bad_input_is_one_line_and_changes_nothing(
    isolated_env: Path, args: tuple[str, ...], needle: str
) -> None:
    before = stored(isolated_env)
    result = cli(*args)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert needle in lines[0]
    assert "Traceback" not in result.output
    assert result.stdout == ""
    assert stored(isolated_env) == before


def test_bad_input_next_to_existing_threads_changes_nothing(
    isolated_env: Path, tmp_path: Path
) -> None:
    assert cli("run", TASK, "--agents", "critic", "--thread", "kept", "--json", *OFF).exit_code == 0
    batch = tmp_path / "bad.jsonl"
    batch.write_text('{"text": "fine"}\nnope\n{"id": 1}\n', encoding="utf-8")
    cases = [
        (("run", "--thread", "ghost", "--resume", *OFF), "unknown thread 'ghost'"),
        (("run", TASK, "--thread", "kept", *OFF), "thread 'kept' already exists"),
        (
            ("meeting", "--thread", "kept", "--resume", *OFF),
            "not the meeting workflow; resume it with `multiagent run --thread kept --resume`",
        ),
        (("run", "Another task", "--thread", "kept", "--resume", *OFF), "differs from the task"),
        (("validate", "--batch", str(batch)), "line 2: not JSON; line 3: no non-empty 'text'"),
        (("validate", "x", "--batch", str(batch)), "not both"),
        (("threads", "show", "ghost"), "unknown thread 'ghost'"),
        (("threads", "history", "ghost"), "unknown thread 'ghost'"),
        (("threads", "show", "kept", "--checkpoint", "nope"), "has no checkpoint 'nope'"),
    ]
    before = stored(isolated_env)
    for args, needle in cases:
        result = cli(*args)
        assert result.exit_code == 2, (args, result.output)
        assert result.stderr.count("\n") == 1, result.stderr
        assert needle in result.stderr, (args, result.stderr)
        assert stored(isolated_env) == before, args


def test_options_a_resumed_thread_cannot_honour_are_refused_not_ignored(
    isolated_env: Path, tmp_path: Path
) -> None:
    stop = ("--budget", "0.0008", "--json", *OFF)  # stops after the first calls: resumable
    assert cli("run", TASK, "--thread", "r", *stop).exit_code == 1
    assert cli("meeting", TASK, "--thread", "m", *stop).exit_code == 1
    batch = tmp_path / "items.jsonl"
    batch.write_text("".join(f'"Oven {n} is hot."\n' for n in range(20)), encoding="utf-8")
    assert cli("validate", "--batch", str(batch), "--thread", "b", *stop[:2]).exit_code == 1
    cases = [
        (("run", "--thread", "r", "--agents", "critic"), "--agents"),
        (("run", TASK, "--thread", "r", "--agents", "critic"), "--agents"),
        (("run", "--thread", "r", "--approve"), "--approve"),
        (("meeting", "--thread", "m", "--participants", "writer"), "--participants"),
        (("meeting", "--thread", "m", "--rounds", "2"), "--rounds"),
        (("validate", "--thread", "b", "--validators", "2"), "--validators"),
        (("validate", "--thread", "b", "--threshold", "0.9"), "--threshold"),
    ]
    before = stored(isolated_env)
    for args, option in cases:
        result = cli(*args, "--resume", "--budget", "1", *OFF[: 2 if args[0] != "validate" else 0])
        assert result.exit_code == 2, (args, result.output)
        assert result.stderr == (
            f"error: {option} cannot be used with --resume: a resumed thread keeps what it "
            f"started with; leave {option} out\n"
        ), args
        assert stored(isolated_env) == before, args


@pytest.mark.parametrize(
    ("variable", "value", "needle"),
    [
        ("MULTIAGENT_MODELS__FAST", "gpt-4.1", "model 'gpt-4.1' has no price"),
        (
            "MULTIAGENT_PRICES",
            '{"gpt-4o-mini": {"input_per_mtok": -1, "output_per_mtok": 1}}',
            "prices.gpt-4o-mini.input_per_mtok=-1 (from env MULTIAGENT_PRICES)",
        ),
        ("MULTIAGENT_BUDGET__DAILY_USD", "-2", "budget.daily_usd='-2' (from env"),
        ("MULTIAGENT_BUDGET__DAILY_USD", "0.000001", "(from env MULTIAGENT_BUDGET__DAILY_USD)"),
    ],
)
def test_bad_prices_and_budgets_from_the_environment_exit_2(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch, variable: str, value: str, needle: str
) -> None:
    monkeypatch.setenv(variable, value)
    before = stored(isolated_env)
    result = cli("run", TASK, "--agents", "critic", *OFF)
    assert result.exit_code == 2, result.output
    assert result.stderr.count("\n") == 1, result.stderr
    assert needle in result.stderr
    assert stored(isolated_env) == before


def test_a_provider_without_its_key_stores_no_thread(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert cli("run", TASK, "--agents", "critic", "--thread", "kept", "--json", *OFF).exit_code == 0
    monkeypatch.setenv("MULTIAGENT_PROVIDER", "openai")
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    before = stored(isolated_env)
    for args in (("run", TASK, *OFF), ("meeting", "Opening hours", *OFF), ("validate", "x")):
        result = cli(*args)
        assert result.exit_code == 2, (args, result.output)
        assert result.stderr.count("\n") == 1, result.stderr
        assert "provider 'openai' needs OPENAI_API_KEY" in result.stderr
        assert stored(isolated_env) == before, args  # no failed thread, no live run


@pytest.mark.parametrize(
    ("url", "needle"),
    [
        ("htp:/127.0.0.1:8080/v1", "the scheme must be http:// or https://"),
        ("http://[::1/v1", "Invalid IPv6 URL"),
        ("http://127.0.0.1:99999/v1", "Port out of range"),
        ("http:///v1", "no host"),
    ],
)
def test_a_malformed_openai_base_url_is_one_line_and_stores_no_thread(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch, url: str, needle: str
) -> None:
    # it was retried as a connection error (exit 1, a failed thread) or raised a traceback
    assert cli("run", TASK, "--agents", "critic", "--thread", "kept", "--json", *OFF).exit_code == 0
    monkeypatch.setenv("MULTIAGENT_PROVIDER", "openai")
    monkeypatch.setenv("OPENAI_API_KEY", "key")
    monkeypatch.setenv("OPENAI_BASE_URL", url)
    before = stored(isolated_env)
    for args in (("run", TASK, *OFF), ("meeting", "Opening hours", *OFF), ("validate", "x")):
        result = cli(*args)
        assert result.exit_code == 2, (args, result.output)
        assert result.stderr.count("\n") == 1, result.stderr
        assert f"malformed OPENAI_BASE_URL {url!r}" in result.stderr
        assert needle in result.stderr
        assert stored(isolated_env) == before, args


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "args",
    [
        ("run", TASK, "--agents", "critic,writer", *OFF),
        ("meeting", "Opening hours", "--rounds", "1", *OFF),
        ("validate", "The bakery opened in 1990."),
    ],
    ids=["run", "meeting", "validate"],
)
def test_a_streamed_run_at_concurrency_one_finishes(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch, args: tuple[str, ...]
) -> None:
    # the local provider's concurrency: LangGraph's background pool of one thread was held by
    # the stream's waiter and the first checkpoint write waited for it for ever
    monkeypatch.setenv("MULTIAGENT_RATE_LIMIT__MAX_CONCURRENCY", "1")
    result = cli(*args)
    assert result.exit_code == 0, result.output
    assert "thread " in result.stdout


def test_an_explicit_price_of_zero_is_a_price(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MULTIAGENT_MODELS__FAST", "gpt-4.1")
    monkeypatch.setenv(
        "MULTIAGENT_PRICES", '{"gpt-4.1": {"input_per_mtok": 0, "output_per_mtok": 0}}'
    )
    result = cli("run", TASK, "--agents", "critic", "--json", *OFF)
    assert result.exit_code == 0, result.output


def test_every_workflow_command_has_help() -> None:
    for command in (["run"], ["meeting"], ["validate"], ["threads"], ["threads", "list"]):
        result = cli(*command, "--help")
        assert result.exit_code == 0
        assert "--json" in result.stdout or command == ["threads"]
