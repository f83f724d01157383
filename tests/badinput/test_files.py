"""Bad files, damaged databases, undecodable argv, and long texts from a file or stdin."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.badinput.conftest import (
    assert_refused,
    copy_of,
    digests,
    invoke,
    refused_unchanged,
)

CASES = settings(
    max_examples=10,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
BINARY = st.binary(min_size=1, max_size=200).map(lambda b: b + b"\x00")
NOT_UTF8 = st.builds(
    lambda a, b: a + b"\xff\xfe" + b, st.binary(max_size=50), st.binary(max_size=50)
)
FILE_COMMANDS = [
    ["validate", "--batch"],
    ["run", "Plan a launch", "--agents-file"],
    ["--config", "{}", "profile"],
    ["persistence", "restore"],
]


def _args(prefix: list[str], path: Path) -> list[str]:
    if "{}" in prefix:
        return [str(path) if part == "{}" else part for part in prefix]
    return [*prefix, str(path)]


@pytest.mark.parametrize("prefix", FILE_COMMANDS, ids=lambda p: " ".join(p[:2]))
@CASES
@given(content=BINARY | NOT_UTF8)
def test_a_binary_or_undecodable_file_is_one_line(
    filled_home: Path, tmp_path: Path, prefix: list[str], content: bytes
) -> None:
    path = tmp_path / "input.file"
    path.write_bytes(content)
    refused_unchanged(_args(prefix, path), template=filled_home)


@pytest.mark.parametrize("prefix", FILE_COMMANDS, ids=lambda p: " ".join(p[:2]))
def test_a_missing_file_or_a_directory_is_one_line(
    filled_home: Path, tmp_path: Path, prefix: list[str]
) -> None:
    refused_unchanged(_args(prefix, tmp_path / "missing"), template=filled_home)
    refused_unchanged(_args(prefix, tmp_path), template=filled_home)


def test_a_schedule_that_is_a_directory_says_so(filled_home: Path, tmp_path: Path) -> None:
    line = refused_unchanged(
        ["sim", "serve", "--port", "0", "--schedule", str(tmp_path)], template=filled_home
    )
    assert line == f"error: schedule file {tmp_path} is a directory; give a file"


def test_a_truncated_batch_file_names_its_line(filled_home: Path, tmp_path: Path) -> None:
    path = tmp_path / "batch.jsonl"
    path.write_text('{"id": "a", "text": "x"}\n{"id": "b", "te', encoding="utf-8")
    refused_unchanged(["validate", "--batch", str(path)], template=filled_home, needle="line 2")


STORES = [
    "checkpoints.sqlite",
    "metrics.sqlite",
    "chroma/chroma.sqlite3",
    "cache/completions/entries/cache.db",
]
READERS = [["threads", "list"], ["persistence", "status"], ["metrics", "history"], ["run", "x"]]


@pytest.mark.parametrize("store", STORES)
@CASES
@given(cut=st.floats(0.0, 0.95), garbage=st.booleans())
def test_a_damaged_database_is_named_with_its_recovery_and_nothing_changes(
    filled_home: Path, store: str, cut: float, garbage: bool
) -> None:
    with copy_of(filled_home) as home:
        path = home / store
        data = path.read_bytes()
        damaged = b"garbage!" * 20 if garbage else data[: max(1, int(len(data) * cut))]
        path.write_bytes(damaged)
        before = digests(home)
        for command in READERS:
            line = assert_refused(invoke(command, home=home), needle=str(path))
            assert "persistence repair" in line or "backup" in line
            assert digests(home) == before, command


@pytest.mark.parametrize("store", ["metrics.sqlite", "cache/completions/entries/cache.db"])
def test_persistence_repair_starts_derived_data_afresh(filled_home: Path, store: str) -> None:
    with copy_of(filled_home) as home:
        (home / store).write_bytes(b"not a database at all" * 10)
        check = invoke(["persistence", "repair", "--check"], home=home)
        assert_refused(check, needle="persistence repair")
        assert (home / store).read_bytes().startswith(b"not a database")
        repaired = invoke(["persistence", "repair"], home=home)
        assert repaired.exit_code == 0, repaired.stderr
        assert not (home / store).exists()
        assert list((home / store).parent.glob("*.damaged-*"))
        assert invoke(["metrics", "history"], home=home).exit_code == 0
        assert invoke(["persistence", "repair"], home=home).stdout.startswith("no damaged")


def test_persistence_repair_restores_agent_memory_from_the_newest_backup(
    filled_home: Path,
) -> None:
    with copy_of(filled_home) as home:
        (home / "chroma" / "chroma.sqlite3").write_bytes(b"x" * 4096)
        assert invoke(["persistence", "status"], home=home).exit_code == 2
        repaired = invoke(["persistence", "repair", "--json"], home=home)
        assert repaired.exit_code == 0, repaired.stderr
        assert "restored from" in repaired.stdout
        status = invoke(["persistence", "status", "--json"], home=home)
        assert status.exit_code == 0, status.stderr
        assert '"researcher"' in status.stdout


def test_persistence_repair_decrypts_a_sealed_backup_and_needs_its_key(
    filled_home: Path,
) -> None:
    key = {"MULTIAGENT_ENCRYPTION_KEY": "ab" * 32}
    with copy_of(filled_home) as home:
        assert invoke(["persistence", "backup"], home=home, env=key).exit_code == 0
        (home / "chroma" / "chroma.sqlite3").write_bytes(b"x" * 4096)
        before = digests(home)
        line = assert_refused(invoke(["persistence", "repair"], home=home))
        assert "key id" in line
        assert digests(home) == before  # without its key nothing moved
        repaired = invoke(["persistence", "repair"], home=home, env=key)
        assert repaired.exit_code == 0, repaired.stderr
        database = (home / "chroma" / "chroma.sqlite3").read_bytes()
        assert database.startswith(b"SQLite format 3")  # a sealed copy was put in place
        status = invoke(["persistence", "status", "--json"], home=home, env=key)
        assert status.exit_code == 0, status.stderr
        assert '"researcher"' in status.stdout


def test_checkpoints_without_a_backup_are_left_and_reported(filled_home: Path) -> None:
    with copy_of(filled_home) as home:
        (home / "checkpoints.sqlite").write_bytes(b"y" * 4096)
        before = digests(home)
        line = assert_refused(invoke(["persistence", "repair"], home=home))
        assert "checkpoints.sqlite" in line
        assert "backup" in line
        assert digests(home) == before


def test_a_long_task_comes_from_a_file_or_standard_input(tmp_path: Path) -> None:
    task = "Plan a launch for a bakery. " + "Details of the shop. " * 7000  # > 128 KiB
    assert len(task.encode()) > 128 * 1024
    path = tmp_path / "task.txt"
    path.write_text(task, encoding="utf-8")
    home = tmp_path / "home"
    base = ["--agents", "critic", "--memory", "off", "--json"]
    from_file = invoke(["run", f"@{path}", *base, "--thread", "from-file"], home=home)
    assert from_file.exit_code == 0, from_file.stderr
    from_stdin = invoke(["run", "-", *base, "--thread", "from-stdin"], home=home, input=task)
    assert from_stdin.exit_code == 0, from_stdin.stderr
    shown = invoke(["threads", "show", "from-stdin", "--json"], home=home)
    assert "Details of the shop." in shown.stdout
    literal = invoke(["validate", "@@handle is a name", "--json"], home=home)
    assert literal.exit_code == 0, literal.stderr


@pytest.mark.parametrize(
    ("command", "argument"), [("run", "TASK"), ("meeting", "TOPIC"), ("validate", "TEXT")]
)
def test_an_at_sign_alone_names_no_file_and_says_so(
    filled_home: Path, command: str, argument: str
) -> None:
    line = refused_unchanged([command, "@"], template=filled_home)
    assert line == (
        f"error: @ names no file for {argument}; give @PATH, or @@ for a text that starts with @"
    )


@pytest.mark.parametrize(
    "argv",
    [
        [b"run", b"caf\xe9 plan"],
        [b"meeting", b"\xff\xfe"],
        [b"run", b"x", b"--thread", b"t\xc3"],
        [b"threads", b"show", b"\x80"],
    ],
)
def test_argv_that_is_not_utf8_is_one_line_in_a_real_process(
    tmp_path: Path, argv: list[bytes]
) -> None:
    home = tmp_path / "home"
    env = {**os.environ, "MULTIAGENT_HOME": str(home), "PYTHONUTF8": "0", "LC_ALL": "C.UTF-8"}
    done = subprocess.run(
        [sys.executable.encode(), b"-m", b"multiagent", *argv],
        env=env,
        capture_output=True,
        timeout=120,
        check=False,
    )
    stderr = done.stderr.decode("utf-8", "replace")
    assert done.returncode == 2, stderr
    assert stderr.count("\n") == 1, stderr
    assert stderr.startswith("error: "), stderr
    assert "UTF-8" in stderr
    assert not home.exists()


KILLED_MID_TRANSACTION = """
import os, signal, sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("CREATE TABLE filler (x BLOB)")
conn.execute(
    "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2000) "
    "INSERT INTO filler SELECT randomblob(600) FROM n"
)
conn.execute("PRAGMA cache_size = 10")  # changed pages spill into the file mid-transaction
conn.execute("BEGIN")
conn.execute("DELETE FROM filler")
conn.execute("DELETE FROM embeddings")
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_writer_killed_mid_transaction_is_not_damage(filled_home: Path) -> None:
    """Its rollback journal undoes what it wrote: status counts what was committed, and
    neither `repair --check` nor `repair` calls the file damaged (nor swaps in a backup)."""
    with copy_of(filled_home) as home:
        status = invoke(["persistence", "status", "--json"], home=home)
        assert status.exit_code == 0, status.stderr
        memory = json.loads(status.stdout)["memory"]["agents"]
        database = home / "chroma" / "chroma.sqlite3"
        killed = subprocess.run(
            [sys.executable, "-c", KILLED_MID_TRANSACTION, str(database)], check=False
        )
        assert killed.returncode == -9
        assert (home / "chroma" / "chroma.sqlite3-journal").stat().st_size > 0
        before = digests(home)
        status = invoke(["persistence", "status", "--json"], home=home)
        assert status.exit_code == 0, status.stderr
        assert json.loads(status.stdout)["memory"]["agents"] == memory
        check = invoke(["persistence", "repair", "--check"], home=home)
        assert check.exit_code == 0, check.stderr
        assert check.stdout.startswith("no damaged")
        assert {k: v for k, v in digests(home).items() if not k.startswith("audit")} == {
            k: v for k, v in before.items() if not k.startswith("audit")
        }


def test_a_file_saved_with_a_utf8_byte_order_mark_reads_as_its_text(tmp_path: Path) -> None:
    bom = b"\xef\xbb\xbf"  # what some editors put first in a UTF-8 file
    home = tmp_path / "home"
    task = tmp_path / "task.txt"
    task.write_bytes(bom + b"Plan a launch for a bakery\r\n")
    agents = tmp_path / "agents.toml"
    agents.write_bytes(bom + b'[agents.economist]\nrole = "You weigh costs."\n')
    config = tmp_path / "multiagent.toml"
    config.write_bytes(bom + b'env = "dev_cost"\n')
    args = ["--config", str(config), "run", f"@{task}", "--agents-file", str(agents)]
    done = invoke(
        [*args, "--agents", "economist", "--memory", "off", "--json", "--thread", "bom"], home=home
    )
    assert done.exit_code == 0, done.stderr
    shown = json.loads(invoke(["threads", "show", "bom", "--json"], home=home).stdout)
    assert shown["values"]["task"] == "Plan a launch for a bakery"
    profile = json.loads(invoke(["--config", str(config), "profile", "--json"], home=home).stdout)
    assert profile["env"] == "dev_cost"


def test_a_batch_file_saved_with_a_utf8_byte_order_mark_reads_its_first_line(
    tmp_path: Path,
) -> None:
    path = tmp_path / "batch.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"id": "a", "text": "water boils at 100 C"}\n"ice is cold"\n')
    done = invoke(["validate", "--batch", str(path), "--json"], home=tmp_path / "home")
    assert done.exit_code in (0, 3), done.stderr  # 3: ran, and consensus failed an item
    results = json.loads(done.stdout)["results"]
    assert [result["id"] for result in results] == ["a", "2"]
