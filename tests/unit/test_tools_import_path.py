"""agents.toml names tools by built-in name or import path; a bad path is one clear line."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from langchain_core.messages import AIMessage

from multiagent.errors import ConfigError
from multiagent.nodes.agents_file import load_agents
from multiagent.nodes.tools import calculator, resolve_tool, run_tool_calls
from multiagent.policies import load_settings

MODULE = '''
from langchain_core.tools import tool

@tool
def shout(text: str) -> str:
    """Say text loudly."""
    return text.upper()

def whisper(text: str) -> str:
    """Say text quietly."""
    return text.lower()

NOT_A_TOOL = 3
'''


@pytest.fixture
def tool_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    (tmp_path / "byo_tools_mod.py").write_text(MODULE, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "byo_tools_mod"
    sys.modules.pop("byo_tools_mod", None)


def write_agents(home: Path, tools: str) -> Path:
    path = home / "agents.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        f'[agents.economist]\nrole = "You are the economist."\ntools = {tools}\n',
        encoding="utf-8",
    )
    return path


def test_tools_by_import_path_and_built_in_name_load(tool_module: str, tmp_path: Path) -> None:
    path = write_agents(tmp_path, f'["calculator", "{tool_module}:shout", "{tool_module}:whisper"]')
    agents = load_agents(load_settings(), agents_file=path)
    assert agents["economist"].tools == (
        "calculator",
        f"{tool_module}:shout",
        f"{tool_module}:whisper",
    )
    assert resolve_tool(f"{tool_module}:shout").invoke({"text": "hi"}) == "HI"
    # a documented plain function becomes a tool
    assert resolve_tool(f"{tool_module}:whisper").invoke({"text": "HI"}) == "hi"


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("no_such_module_xyz:tool", "cannot import module 'no_such_module_xyz'"),
        ("byo_tools_mod:missing", "module 'byo_tools_mod' has no attribute 'missing'"),
        ("byo_tools_mod:NOT_A_TOOL", "is not a tool or a documented function"),
        ("abacus", "unknown tool 'abacus'; valid: calculator, word_count"),
    ],
)
def test_a_bad_tool_is_one_line_naming_it(
    tool_module: str, tmp_path: Path, ref: str, message: str
) -> None:
    path = write_agents(tmp_path, f'["{ref}"]')
    with pytest.raises(ConfigError, match=message) as caught:
        load_agents(load_settings(), agents_file=path)
    assert "\n" not in str(caught.value)
    assert "agent 'economist'" in str(caught.value)


def test_tool_calls_get_results_and_unknown_tools_an_error_message() -> None:
    reply = AIMessage(
        "",
        tool_calls=[
            {"name": "calculator", "args": {"expression": "2*3"}, "id": "a"},
            {"name": "nope", "args": {}, "id": "b"},
            {"name": "calculator", "args": {"wrong": 1}, "id": "c"},
        ],
    )
    answers = run_tool_calls(reply, [calculator])
    assert [(m.tool_call_id, m.status) for m in answers] == [
        ("a", "success"),
        ("b", "error"),
        ("c", "error"),
    ]
    assert answers[0].text == "6"
    assert "not a valid tool" in answers[1].text
