"""Agents: built-in roles, agents.toml overrides, tools, the checks on names from the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest

from multiagent.errors import ConfigError, UsageError
from multiagent.graphs.inputs import meeting_input, orchestration_input
from multiagent.nodes.agents import BUILTIN_AGENTS, DEFAULT_TEAM, VALIDATOR_ORDER
from multiagent.nodes.agents_file import load_agents, split_names
from multiagent.nodes.input_defaults import check_meeting, check_task
from multiagent.nodes.tools import calculator, word_count
from multiagent.policies import load_settings
from multiagent.sim.text import detect_role

#: The role the simulated provider should recognise in each built-in system prompt.
EXPECTED_ROLES = {
    "researcher": "researcher",
    "analyst": "analyst",
    "critic": "critic",
    "writer": "writer",
    "planner": "planner",
    "synthesizer": "synthesizer",
    "moderator": "moderator",
    "secretary": "summary",
}


def test_builtin_prompts_name_their_role() -> None:
    for agent in BUILTIN_AGENTS:
        expected = EXPECTED_ROLES.get(agent.name, "validator")
        assert detect_role(agent.role) == expected, agent.name


def test_validators_have_distinct_criteria() -> None:
    validators = [a for a in BUILTIN_AGENTS if a.kind == "validator"]
    assert [a.name for a in validators] == list(VALIDATOR_ORDER)
    assert len({a.criteria for a in validators}) == len(validators) == 6


def test_agents_file_adds_and_overrides(tmp_path: Path) -> None:
    path = tmp_path / "agents.toml"
    path.write_text(
        '[agents.economist]\nrole = "You are the analyst for economics."\ntier = "premium"\n'
        'tools = ["calculator"]\n\n[agents.critic]\ntier = "fast"\n',
        encoding="utf-8",
    )
    catalog = load_agents(load_settings(), agents_file=path)
    assert catalog["economist"].tier == "premium"
    assert catalog["economist"].tools == ("calculator",)
    assert catalog["critic"].tier == "fast"
    assert catalog["critic"].role == next(a.role for a in BUILTIN_AGENTS if a.name == "critic")
    assert "economist" in catalog.of_kind("worker")


def test_agents_toml_in_home_is_read(isolated_env: Path) -> None:
    isolated_env.mkdir(parents=True, exist_ok=True)
    (isolated_env / "agents.toml").write_text(
        '[agents.historian]\nrole = "You are the researcher of history."\n', encoding="utf-8"
    )
    assert "historian" in load_agents(load_settings())


def test_default_team_and_participants_are_the_defaults_still_workers(tmp_path: Path) -> None:
    path = tmp_path / "agents.toml"
    path.write_text('[agents.writer]\nkind = "validator"\n[agents.critic]\nkind = "moderator"\n')
    catalog = load_agents(load_settings(), agents_file=path)
    # the run's own input check refused the default team when one of it was no worker
    inputs = orchestration_input("Price the menu", agents=catalog)
    assert inputs["team"] == check_task(inputs, catalog) == ["researcher", "analyst"]
    assert meeting_input("Sundays?", agents=catalog)["participants"] == ["researcher", "analyst"]
    path.write_text("".join(f'[agents.{n}]\nkind = "validator"\n' for n in DEFAULT_TEAM))
    nobody = load_agents(load_settings(), agents_file=path)
    with pytest.raises(UsageError, match=r"default team .* name them with --agents"):
        orchestration_input("Price the menu", agents=nobody)
    with pytest.raises(UsageError, match=r"default participants .* --participants"):
        check_meeting({"topic": "Sundays?"}, nobody)


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ('[agents.x]\nrole = "r"\ncolour = "red"\n', "unknown field 'colour'"),
        ('[agents.x]\nrole = "r"\ntier = "huge"\n', "agent 'x'"),
        ('[agents.x]\nrole = "r"\ntools = ["shell"]\n', "unknown tool 'shell'"),
        ('[agents.Bad]\nrole = "r"\n', "agent 'Bad'"),
        ("[agents.x]\nrole = \n", "malformed"),
        ('[teams.x]\nrole = "r"\n', "unknown key 'teams'"),
    ],
)
def test_bad_agents_file_is_one_clear_error(tmp_path: Path, content: str, needle: str) -> None:
    path = tmp_path / "agents.toml"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ConfigError, match=needle):
        load_agents(load_settings(), agents_file=path)


def test_missing_agents_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_agents(load_settings(), agents_file=tmp_path / "nope.toml")


def test_team_checks_names() -> None:
    catalog = load_agents(load_settings())
    assert catalog.team(split_names("critic, writer") or [], kind="worker", option="--agents") == (
        "critic",
        "writer",
    )
    with pytest.raises(UsageError, match="unknown agent 'bogus'; valid: researcher"):
        catalog.team(["bogus"], kind="worker", option="--agents")
    with pytest.raises(UsageError, match="unknown agent 'safety'"):
        catalog.team(["safety"], kind="worker", option="--agents")  # a validator, not a worker
    with pytest.raises(UsageError, match="twice"):
        catalog.team(["critic", "critic"], kind="worker", option="--agents")
    with pytest.raises(UsageError, match=r"--agents ',critic' has an empty name \(name 1 of 2\)"):
        catalog.team(["", "critic"], kind="worker", option="--agents")
    with pytest.raises(UsageError, match="--agents needs at least one name; valid: researcher"):
        catalog.team(split_names(" ") or [], kind="worker", option="--agents")


def test_calculator_is_safe_and_exact() -> None:
    assert calculator.invoke({"expression": "(120 - 45) * 0.2"}) == "15"
    assert calculator.invoke({"expression": "2 ** 10"}) == "1024"
    assert calculator.invoke({"expression": "__import__('os')"}).startswith("error:")
    assert calculator.invoke({"expression": "1/0"}).startswith("error:")
    assert calculator.invoke({"expression": "9 ** 999"}).startswith("error:")
    assert word_count.invoke({"text": "One two. Three!"}) == "3 words, 2 sentences"
