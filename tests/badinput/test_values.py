"""Generated bad values for every option, id, text and configuration source: one line, exit 2."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import typer.main
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from multiagent._inputs import ID_PATTERN
from multiagent.cli import app
from tests.badinput.conftest import refused_unchanged

CASES = settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
NON_FINITE = st.sampled_from(["nan", "NaN", "inf", "-inf", "+Infinity", "1e999", "-1e999"])
TASK = "Plan a launch"

# every numeric option of the commands that touch the data directory, with a value below its range
NUMERIC: list[tuple[list[str], str, str]] = [
    (["run", TASK], "--budget", "-0.01"),
    (["meeting", TASK], "--budget", "-5"),
    (["meeting", TASK], "--rounds", "0"),
    (["meeting", TASK], "--rounds", "21"),
    (["validate", TASK], "--budget", "-1"),
    (["validate", TASK], "--threshold", "1.5"),
    (["validate", TASK], "--validators", "0"),
    (["validate", TASK], "--validators", "7"),
    (["validate", TASK], "--concurrency", "0"),
    (["validate", TASK], "--concurrency", "65"),
    (["worker"], "--concurrency", "0"),
    (["worker"], "--claim-idle", "-1"),
    (["worker"], "--claim-idle", "86401"),
    (["worker"], "--max-attempts", "0"),
    (["worker"], "--idle-exit", "-3"),
    (["threads", "list"], "--limit", "0"),
    (["metrics", "history"], "--hours", "0"),
    (["metrics", "history"], "--hours", "25"),
    (["persistence", "prune"], "--keep", "0"),
    (["persistence", "prune"], "--max-age-days", "-1"),
    (["persistence", "scheduler"], "--duration", "-1"),
    (["bench", "cache"], "--repeat-share", "0.95"),
    (["bench", "batch"], "--latency-ms", "0.5"),
    (["bench", "backpressure"], "--phase-seconds", "0.5"),
]
FLOAT_OPTIONS = sorted(
    {(tuple(prefix), option) for prefix, option, _ in NUMERIC if option != "--limit"}
    - {
        (("meeting", TASK), "--rounds"),
        (("validate", TASK), "--validators"),
        (("validate", TASK), "--concurrency"),
        (("worker",), "--concurrency"),
        (("worker",), "--max-attempts"),
        (("metrics", "history"), "--hours"),
        (("persistence", "prune"), "--keep"),
    }
)


@pytest.mark.parametrize(("prefix", "option", "value"), NUMERIC)
def test_a_number_out_of_range_is_refused(
    filled_home: Path, prefix: list[str], option: str, value: str
) -> None:
    line = refused_unchanged(
        [*prefix, option, value], template=filled_home, needle=option.lstrip("-")
    )
    numbers = {float(n) for n in re.findall(r"-?\d+(?:\.\d+)?", line)}
    assert float(value) in numbers, line  # the line names the value it refused


@pytest.mark.parametrize(("prefix", "option"), FLOAT_OPTIONS)
@CASES
@given(value=NON_FINITE)
def test_nan_and_infinity_are_refused_by_every_float_option(
    filled_home: Path, prefix: tuple[str, ...], option: str, value: str
) -> None:
    refused_unchanged([*prefix, option, value], template=filled_home, needle=option)


BAD_IDS = st.text(max_size=200).filter(lambda s: re.fullmatch(ID_PATTERN, s) is None) | st.just(
    "x" * 129
)
ID_COMMANDS = [
    ["run", TASK, "--thread"],
    ["meeting", TASK, "--thread"],
    ["validate", TASK, "--thread"],
    ["threads", "show", "--"],
    ["threads", "history", "--"],
    ["threads", "show", "demo-1", "--checkpoint"],
    ["batch", "status", "--"],
    ["batch", "results", "--"],
]


@pytest.mark.parametrize("prefix", ID_COMMANDS, ids=lambda p: " ".join(p[:2]))
@CASES
@given(value=BAD_IDS)
def test_an_id_outside_the_documented_set_is_refused(
    filled_home: Path, prefix: list[str], value: str
) -> None:
    refused_unchanged([*prefix, value], template=filled_home)


CONTROL = st.sampled_from([chr(c) for c in (*range(0, 9), 11, 12, *range(14, 32), 127)])
SURROGATE = st.integers(0x80, 0xFF).map(lambda b: chr(0xDC00 + b))


@pytest.mark.parametrize("command", ["run", "meeting", "validate"])
@CASES
@given(head=st.text(max_size=20), bad=CONTROL | SURROGATE, tail=st.text(max_size=20))
def test_text_with_control_characters_or_undecodable_bytes_is_refused(
    filled_home: Path, command: str, head: str, bad: str, tail: str
) -> None:
    text = "x" + head + bad + tail
    refused_unchanged(
        [command, text], template=filled_home, needle="TEXT" if command == "validate" else None
    )


@CASES
@given(bad=CONTROL | SURROGATE)
def test_every_string_option_refuses_undecodable_or_control_text(
    filled_home: Path, bad: str
) -> None:
    for args in (["run", TASK, "--agents", f"critic{bad}"], ["--env", f"dev{bad}", "profile"]):
        refused_unchanged(args, template=filled_home)


@pytest.mark.parametrize(
    ("args", "names", "position"),
    [
        (["meeting", TASK, "--participants"], "analyst,,critic", "name 2 of 3"),
        (["run", TASK, "--agents"], "researcher,critic,", "name 3 of 3"),
    ],
)
def test_an_empty_name_in_a_list_of_agents_is_named(
    filled_home: Path, args: list[str], names: str, position: str
) -> None:
    line = refused_unchanged([*args, names], template=filled_home, needle="empty name")
    assert repr(names) in line
    assert position in line
    assert "at least one name" not in line  # it has names; one of them is empty
    assert "valid: researcher, analyst, critic, writer" in line


def _leaf_commands() -> list[list[str]]:
    found: list[list[str]] = []

    def walk(command: object, path: list[str]) -> None:
        children = getattr(command, "commands", {})
        if not children:
            found.append(path)
        for name, child in children.items():
            walk(child, [*path, name])

    walk(typer.main.get_command(app), [])
    return found


@pytest.mark.parametrize("command", _leaf_commands(), ids=" ".join)
def test_every_command_refuses_an_unknown_option_in_one_line(
    filled_home: Path, command: list[str]
) -> None:
    line = refused_unchanged([*command, "--no-such-option\x1b[2J"], template=filled_home)
    assert "; valid: " in line, line  # what is there, too
    assert line.endswith(", --help"), line


def _groups() -> dict[str, tuple[list[str], list[str]]]:
    """Every command group: its path and its commands' names."""
    found: dict[str, tuple[list[str], list[str]]] = {}

    def walk(command: object, path: list[str]) -> None:
        children = getattr(command, "commands", {})
        if children:
            found[" ".join(path) or "multiagent"] = (path, list(children))
        for name, child in children.items():
            walk(child, [*path, name])

    walk(typer.main.get_command(app), [])
    return found


@pytest.mark.parametrize("group", sorted(_groups()))
def test_an_unknown_command_names_every_valid_one(filled_home: Path, group: str) -> None:
    path, names = _groups()[group]
    line = refused_unchanged([*path, "no-such-command"], template=filled_home)
    assert "'no-such-command'" in line, line
    assert sorted(line.split("; valid: ")[1].split(", ")) == sorted(names), line


SECTIONS = ["models", "validation", "rate_limit", "memory", "cache", "features", "budget", "sim"]


def _misspelt(name: str, data: st.DataObject) -> str:
    index = data.draw(st.integers(0, len(name) - 1))
    change = data.draw(st.sampled_from(["drop", "double", "swap"]))
    if change == "drop":
        return name[:index] + name[index + 1 :]
    if change == "double":
        return name[:index] + name[index] + name[index:]
    return name[:index] + "q" + name[index + 1 :]


def test_a_doubled_separator_inside_a_section_name_names_the_section(filled_home: Path) -> None:
    # "rate__limit" splits as section "rate", key "limit__x": the hint joins them back
    line = refused_unchanged(
        ["profile"], template=filled_home, env={"MULTIAGENT_RATE__LIMIT__X": "1"}
    )
    assert "unknown settings section 'rate'" in line
    assert "did you mean 'rate_limit'" in line


@CASES
@given(data=st.data())
def test_a_misspelt_section_or_key_names_the_nearest_one(
    filled_home: Path, tmp_path: Path, data: st.DataObject
) -> None:
    section = data.draw(st.sampled_from(SECTIONS))
    wrong = _misspelt(section, data)
    if wrong in SECTIONS:
        return
    variable = f"MULTIAGENT_{wrong.upper()}__X"
    line = refused_unchanged(["profile"], template=filled_home, env={variable: "1"})
    assert "did you mean" in line
    assert section in line
    key = data.draw(st.sampled_from(["max_concurrency", "requests_per_minute", "retry_attempts"]))
    wrong_key = _misspelt(key, data)
    config = tmp_path / "multiagent.toml"
    config.write_text(f"[rate_limit]\n{wrong_key} = 3\n", encoding="utf-8")
    if wrong_key != key:
        line = refused_unchanged(["--config", str(config), "profile"], template=filled_home)
        assert "did you mean" in line


NOT_AN_OBJECT = st.one_of(
    st.text(max_size=30).filter(lambda s: not s.strip().startswith("{")),
    st.lists(st.integers(), max_size=3).map(str),
    st.sampled_from(["[1, 2]", "null", "3", '"text"', "{not json"]),
)


@pytest.mark.parametrize("section", ["RATE_LIMIT", "MODELS", "PRICES", "SIM", "BUDGET"])
@CASES
@given(value=NOT_AN_OBJECT)
def test_a_section_variable_that_is_not_a_json_object_is_one_line(
    filled_home: Path, section: str, value: str
) -> None:
    if not value or "\x00" in value:  # an empty variable is an unset one; NUL cannot be set
        return
    refused_unchanged(
        ["threads", "list"], template=filled_home, env={f"MULTIAGENT_{section}": value}
    )


@pytest.mark.parametrize("hours", ["8761", "1e9", "1e300"])
def test_a_snapshot_interval_beyond_a_year_is_refused(filled_home: Path, hours: str) -> None:
    # the schedule's next snapshot fell past year 9999: a traceback from every scheduler command
    for command in (["persistence", "status"], ["persistence", "scheduler", "--duration", "0"]):
        refused_unchanged(
            command,
            template=filled_home,
            env={"MULTIAGENT_MEMORY__SNAPSHOT_INTERVAL_HOURS": hours},
            needle="memory.snapshot_interval_hours",
        )


@CASES
@given(
    url=st.one_of(
        st.sampled_from(["mysql://db/x", "sqlite:///tmp/x", "redis://h/0", "garbage", "://"]),
        st.text(min_size=1, max_size=40).filter(
            lambda s: "\x00" not in s and not s.startswith("postgres")
        ),
    )
)
def test_a_checkpoint_url_of_another_scheme_names_the_valid_ones(
    filled_home: Path, url: str
) -> None:
    if not url.strip():
        return
    line = refused_unchanged(
        ["threads", "list"], template=filled_home, env={"MULTIAGENT_CHECKPOINT_URL": url}
    )
    assert "postgresql://" in line or "malformed" in line


def test_a_tier_model_without_a_price_names_the_priced_ones(filled_home: Path) -> None:
    line = refused_unchanged(
        ["threads", "list"], template=filled_home, env={"MULTIAGENT_MODELS__PREMIUM": "gpt-4oo"}
    )
    assert "did you mean 'gpt-4o'" in line
    assert "priced:" in line


def test_a_home_that_is_a_file_or_empty_is_one_line(tmp_path: Path, filled_home: Path) -> None:
    regular = tmp_path / "home-file"
    regular.write_text("not a directory", encoding="utf-8")
    for command in (["threads", "list"], ["persistence", "status"], ["run", TASK]):
        refused_unchanged(
            command, template=filled_home, env={"MULTIAGENT_HOME": str(regular)},
            needle="is not a directory",
        )  # fmt: skip
    assert regular.read_text(encoding="utf-8") == "not a directory"
    refused_unchanged(["--home", "", "threads", "list"], template=filled_home, needle="empty")
