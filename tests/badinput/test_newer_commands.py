"""The contract for the newer commands and sources: audit, rotate-key, the metrics server,
``bench local``, ``--model`` and ``MULTIAGENT_ENCRYPTION_KEY``: exit 2, one line, no traceback,
a byte-identical data directory."""

from __future__ import annotations

import base64
import ipaddress
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from multiagent.errors import UsageError
from multiagent.persistence.crypto import parse_key
from tests.badinput.conftest import refused_unchanged

CASES = settings(
    max_examples=10,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def _not_a_key(text: str) -> bool:
    try:
        parse_key(text, source="test")
    except UsageError:
        return True
    return False


HEX = "0123456789abcdef"
BAD_KEYS = (
    st.integers(1, 130).filter(lambda n: n != 64).map(lambda n: (HEX * 20)[:n])
    | st.binary(min_size=1, max_size=64)
    .filter(lambda b: len(b) != 32)
    .map(lambda b: base64.b64encode(b).decode())
    | st.text(
        st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), min_size=1, max_size=80
    )
).filter(lambda s: s.strip() != "" and _not_a_key(s))


@CASES
@given(key=BAD_KEYS, command=st.sampled_from([["threads", "list"], ["persistence", "status"]]))
def test_a_malformed_encryption_key_is_one_line(
    filled_home: Path, key: str, command: list[str]
) -> None:
    line = refused_unchanged(command, template=filled_home, env={"MULTIAGENT_ENCRYPTION_KEY": key})
    assert "MULTIAGENT_ENCRYPTION_KEY" in line
    assert key not in line or len(key) < 4  # a secret is never echoed


@CASES
@given(key=BAD_KEYS)
def test_rotate_key_refuses_a_malformed_new_key(filled_home: Path, key: str) -> None:
    refused_unchanged(
        ["persistence", "rotate-key"],
        template=filled_home,
        env={"MULTIAGENT_NEW_ENCRYPTION_KEY": key},
        needle="MULTIAGENT_NEW_ENCRYPTION_KEY",
    )


@CASES
@given(content=st.binary(max_size=100).filter(lambda b: len(b) != 32))
def test_rotate_key_refuses_a_key_file_that_holds_no_key(
    filled_home: Path, tmp_path: Path, content: bytes
) -> None:
    path = tmp_path / "new.key"
    path.write_bytes(content)
    assume(_not_a_key(content.decode("utf-8", "replace")))
    refused_unchanged(
        ["persistence", "rotate-key", "--new-key-file", str(path)],
        template=filled_home,
        needle="--new-key-file",
    )


def test_rotate_key_refuses_a_missing_key_file_or_a_directory(
    filled_home: Path, tmp_path: Path
) -> None:
    for path in (tmp_path / "missing.key", tmp_path):
        refused_unchanged(
            ["persistence", "rotate-key", "--new-key-file", str(path)], template=filled_home
        )
    refused_unchanged(["persistence", "rotate-key"], template=filled_home, needle="new key")


def _audit_not_a_directory(home: Path) -> None:
    shutil.rmtree(home / "audit", ignore_errors=True)
    (home / "audit").write_text("not a trail", encoding="utf-8")


def _trail_file_a_directory(home: Path) -> None:
    trail = sorted((home / "audit").glob("audit-*.jsonl"))[0]
    trail.unlink()
    trail.mkdir()


def _head_a_directory(home: Path) -> None:
    (home / "audit" / "HEAD").unlink()
    (home / "audit" / "HEAD").mkdir()


@pytest.mark.parametrize(
    "damage", [_audit_not_a_directory, _trail_file_a_directory, _head_a_directory]
)
@pytest.mark.parametrize("command", [["audit", "verify"], ["audit", "show"]], ids=" ".join)
def test_an_audit_trail_of_the_wrong_kind_is_one_line(
    filled_home: Path, tmp_path: Path, damage: object, command: list[str]
) -> None:
    template = tmp_path / "home"
    shutil.copytree(filled_home, template)
    damage(template)  # type: ignore[operator]
    refused_unchanged(command, template=template, needle="audit")


@pytest.mark.parametrize(
    "args",
    [
        ["audit", "show", "--last", "0"],
        ["audit", "show", "--last", "nan"],
        ["audit", "verify", "x"],
    ],
)
def test_audit_refuses_bad_arguments(filled_home: Path, args: list[str]) -> None:
    refused_unchanged(args, template=filled_home)


def test_audit_verify_names_a_head_that_is_json_but_no_record(filled_home: Path) -> None:
    from tests.badinput.conftest import copy_of, digests, invoke

    with copy_of(filled_home) as home:
        (home / "audit" / "HEAD").write_text("[1, 2]", encoding="utf-8")
        before = digests(home)
        outcome = invoke(["audit", "verify"], home=home)
        assert outcome.exit_code == 1  # verify's answer: the trail is not intact
        assert outcome.exception is None or isinstance(outcome.exception, SystemExit)
        assert "HEAD is not a JSON record" in outcome.stderr
        assert digests(home) == before


def _non_loopback(host: str) -> bool:
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host != "localhost"


HOSTS = (
    st.ip_addresses().map(str)
    | st.from_regex(r"[a-z][a-z0-9-]{0,20}(\.[a-z]{2,5})?", fullmatch=True)
).filter(_non_loopback)


@CASES
@given(host=HOSTS, command=st.sampled_from([["dashboard"], ["metrics", "serve"]]))
def test_a_non_loopback_host_without_a_token_is_refused_before_binding(
    filled_home: Path, host: str, command: list[str]
) -> None:
    refused_unchanged(
        [*command, "--host", host, "--port", "0"],
        template=filled_home,
        env={"MULTIAGENT_METRICS_TOKEN": ""},
        needle="MULTIAGENT_METRICS_TOKEN",
    )


@CASES
@given(
    port=st.one_of(
        st.integers(max_value=-1),
        st.integers(min_value=65536),
        st.sampled_from(["x", "1.5", "nan"]),
    ),
    command=st.sampled_from([["dashboard"], ["metrics", "serve"]]),
)
def test_a_bad_port_is_refused(filled_home: Path, port: object, command: list[str]) -> None:
    refused_unchanged([*command, "--port", str(port)], template=filled_home, needle="--port")


@pytest.mark.parametrize(
    "args",
    [
        ["--rounds", "0"],
        ["--rounds", "nan"],
        ["--max-tokens", "7"],
        ["--max-tokens", "-1"],
        ["--report", "{tmp}"],
        ["--report", "{tmp}/missing/report.md"],
    ],
)
def test_bench_local_refuses_bad_arguments_before_loading_a_model(
    filled_home: Path, tmp_path: Path, args: list[str]
) -> None:
    shown = [part.replace("{tmp}", str(tmp_path)) for part in args]
    refused_unchanged(["bench", "local", *shown], template=filled_home, needle=args[0])


def _bench_commands() -> list[str]:
    import typer.main

    from multiagent.cli import app

    return sorted(typer.main.get_command(app).commands["bench"].commands)  # type: ignore[attr-defined]


@pytest.mark.parametrize("command", _bench_commands())
@pytest.mark.parametrize("order", ["report first", "no-report first"])
def test_every_bench_refuses_a_report_and_no_report_before_it_runs(
    filled_home: Path, tmp_path: Path, command: str, order: str
) -> None:
    # the benchmark ran for minutes, then wrote nothing where --report asked for a file
    both = ["--report", str(tmp_path / "report.md"), "--no-report"]
    args = both if order == "report first" else [both[2], *both[:2]]
    refused_unchanged(["bench", command, *args], template=filled_home, needle="--no-report")
    assert not (tmp_path / "report.md").exists()


MODELS = st.one_of(
    st.sampled_from(["", ":", "sim", "sim:", ":gpt-4o-mini", "openai:", "nope:x", "a:b:c"]),
    st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=20).filter(
        lambda s: ":" not in s
    ),
    st.builds(
        lambda provider, name: f"{provider}:{name}",
        st.from_regex(r"zz[a-z]{0,6}", fullmatch=True),  # never a provider: nothing is called
        st.from_regex(r"[a-z0-9-]{1,10}", fullmatch=True),
    ),
)


@CASES
@given(model=MODELS)
def test_a_bad_model_string_is_one_line(filled_home: Path, model: str) -> None:
    assume("\x00" not in model)
    refused_unchanged(["run", "Plan a launch", "--model", model], template=filled_home)
