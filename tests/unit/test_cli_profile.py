from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from multiagent.cli import app
from multiagent.commands import _shared as shared
from multiagent.policies import PROVIDERS

runner = CliRunner()


def test_profile_json_resolves_every_profile_and_policy() -> None:
    for env in ("dev_cost", "dev_balanced", "staging_quality", "prod_balanced", "prod_quality"):
        for policy in ("cost_optimized", "balanced", "quality_optimized"):
            result = runner.invoke(app, ["profile", "--env", env, "--policy", policy, "--json"])
            assert result.exit_code == 0, result.output
            document = json.loads(result.stdout)
            assert (document["env"], document["policy"]) == (env, policy)
            assert document["sources"]["env"] == "cli --env"


def test_profile_table_names_sources(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MULTIAGENT_RATE_LIMIT__MAX_CONCURRENCY", "7")
    monkeypatch.setattr(shared.console, "width", 200)
    result = runner.invoke(app, ["profile"])
    assert result.exit_code == 0
    assert "rate_limit.max_concurrency" in result.stdout
    assert "env MULTIAGENT_RATE_LIMIT__MAX_CONCURRENCY" in result.stdout


def test_root_options_reach_the_command(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["--env", "prod_quality", "--home", str(tmp_path), "profile", "--json"]
    )
    document = json.loads(result.stdout)
    assert document["env"] == "prod_quality"
    assert document["home"] == str(tmp_path)


def test_the_provider_option_names_every_provider() -> None:
    import typer.main

    option = next(p for p in typer.main.get_command(app).params if p.name == "provider")
    for provider in PROVIDERS:
        assert provider in str(option.help), option.help


def test_profile_list() -> None:
    result = runner.invoke(app, ["profile", "--list", "--json"])
    catalogue = json.loads(result.stdout)
    assert set(catalogue["profiles"]) == {
        "dev_cost",
        "dev_balanced",
        "staging_quality",
        "prod_balanced",
        "prod_quality",
    }
    assert set(catalogue["policies"]) == {"cost_optimized", "balanced", "quality_optimized"}


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["profile", "--env", "nope"], "unknown profile 'nope'"),
        (["profile", "--policy", "cheapest"], "unknown policy 'cheapest'"),
        (["profile", "--bogus"], "No such option: --bogus"),
        (["--config", "missing.toml", "profile"], "missing.toml does not exist"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args: list[str], needle: str) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: ")
    assert needle in lines[0]
    assert "Traceback" not in result.output


def test_malformed_toml_from_the_console_script() -> None:
    Path("multiagent.toml").write_text("[validation]\nvalidators_min = 4\nvalidators_max = 2\n")
    proc = subprocess.run(
        [sys.executable, "-m", "multiagent", "profile"], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1
    assert "validators_min (4) is above validators_max (2)" in proc.stderr
    assert "multiagent.toml" in proc.stderr


def _command_paths() -> list[list[str]]:
    """Every command and sub-command of the app, as argument lists."""
    import typer.main

    paths: list[list[str]] = []

    def walk(command: object, prefix: list[str]) -> None:
        subcommands = getattr(command, "commands", None)
        if not subcommands:
            paths.append(prefix)
            return
        paths.append(prefix)
        for name, sub in subcommands.items():
            walk(sub, [*prefix, name])

    walk(typer.main.get_command(app), [])
    return paths


def test_every_command_has_help() -> None:
    paths = _command_paths()
    names = {" ".join(p) for p in paths}
    expected = {
        "profile", "run", "meeting", "validate", "threads list", "threads show", "threads history",
        "persistence status", "persistence snapshot", "persistence restore", "persistence prune",
        "persistence backup", "persistence vacuum", "persistence compact", "persistence scheduler",
        "metrics serve", "sim serve", "bench backpressure", "bench batch", "bench cache",
        "bench overhead",
    }  # fmt: skip
    assert expected <= names
    for path in paths:
        result = runner.invoke(app, [*path, "--help"])
        assert result.exit_code == 0, (path, result.output)
        assert "Usage" in result.output


def test_the_cli_loads_no_heavy_stack_to_show_help() -> None:
    code = (
        "import sys\n"
        "from multiagent.cli import app\n"
        "from typer.testing import CliRunner\n"
        "assert CliRunner().invoke(app, ['--help']).exit_code == 0\n"
        "heavy = ('chromadb', 'openai', 'langgraph', 'langchain_openai', 'fastapi')\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["profile", "--env", "", "--json"], "error: unknown profile '' (from cli --env); valid: "),
        (
            ["profile", "--policy", "", "--json"],
            "error: unknown policy '' (from cli --policy); valid: ",
        ),
        (["--config", "", "profile", "--json"], "error: empty config file (from cli --config)"),
    ],
)
def test_an_empty_option_is_refused_not_the_default(
    isolated_env: Path, args: list[str], message: str
) -> None:
    # ``profile --env ""`` showed the file's profile as if no --env had been given
    Path("multiagent.toml").write_text('env = "prod_quality"\npolicy = "cost_optimized"\n')
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    assert result.stderr.startswith(message)
    assert result.stderr.count("\n") == 1
    assert not isolated_env.exists()


def test_a_config_list_where_a_name_goes_is_one_line_from_the_console_script(
    isolated_env: Path,
) -> None:
    Path("multiagent.toml").write_text('policy = ["balanced"]\n')
    proc = subprocess.run(
        [sys.executable, "-m", "multiagent", "run", "a task", "--no-stream"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr == (
        f"error: unknown policy ['balanced'] (from file {Path.cwd() / 'multiagent.toml'}); "
        "valid: cost_optimized, balanced, quality_optimized\n"
    )
    assert not isolated_env.exists()


def test_a_boolean_budget_in_the_config_runs_nothing(isolated_env: Path) -> None:
    # ``budget_usd = true`` was read as a budget of $1 and the run went ahead
    Path("multiagent.toml").write_text("budget_usd = true\n")
    result = runner.invoke(app, ["run", "a task", "--no-stream", "--json"])
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    assert result.stderr.startswith("error: invalid setting budget_usd=True (from file ")
    assert not isolated_env.exists()


def test_profile_json_reports_the_project_day_in_utc_and_when_it_ends(
    monkeypatch: pytest.MonkeyPatch, isolated_env: Path
) -> None:
    from datetime import UTC, datetime

    from multiagent.models import budget as budget_module
    from multiagent.policies import load_settings

    now = [datetime(2026, 3, 1, 23, 59, 30, tzinfo=UTC)]

    class _Clock(datetime):
        @classmethod
        def now(cls, tz: object = None) -> _Clock:  # type: ignore[override]
            return now[0]  # type: ignore[return-value]

    monkeypatch.setattr(budget_module, "datetime", _Clock)
    monkeypatch.setenv("MULTIAGENT_BUDGET__DAILY_USD", "5")
    store = budget_module.open_project_budget(load_settings())
    assert store is not None
    store.settle(store.reserve(0.25), 0.125)

    def spend() -> dict[str, object]:
        result = runner.invoke(app, ["profile", "--json"])
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)["project_spend"]  # type: ignore[no-any-return]

    assert spend() == {
        "store": "sqlite",
        "period": "2026-03-01",
        "daily_usd": 5.0,
        "spent_usd": 0.125,
        "held_usd": 0.0,
        "resets_at": "2026-03-02T00:00:00+00:00",
    }
    now[0] = datetime(2026, 3, 2, 0, 0, 1, tzinfo=UTC)  # the next UTC day starts afresh
    assert spend() == {
        "store": "sqlite",
        "period": "2026-03-02",
        "daily_usd": 5.0,
        "spent_usd": 0.0,
        "held_usd": 0.0,
        "resets_at": "2026-03-03T00:00:00+00:00",
    }
