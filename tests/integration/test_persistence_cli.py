"""``multiagent persistence ...`` through the real CLI, good input and bad."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from multiagent.cli import app
from multiagent.models.analysis_cache import open_analysis_cache
from multiagent.models.completion_cache import open_completion_cache
from multiagent.persistence.checkpointer import open_checkpointer
from multiagent.persistence.memory import open_agent_memory
from multiagent.policies import load_settings

runner = CliRunner()
FACTS = ["Paris is the capital of France.", "Berlin is the capital of Germany."]


def _seed() -> None:
    settings = load_settings()
    with open_agent_memory(settings, embeddings="lexical") as memory:
        memory.remember("researcher", FACTS, metadata={"thread_id": "t-1"})
        memory.remember("critic", ["Check the sources twice."])
    with open_checkpointer(settings) as saver:
        saver.put(
            {"configurable": {"thread_id": "t-1", "checkpoint_ns": ""}},
            {
                "v": 4,
                "id": "1f0a0000-0000-6000-8000-000000000001",
                "ts": "2026-01-01T00:00:00+00:00",
                "channel_values": {},
                "channel_versions": {},
                "versions_seen": {},
                "updated_channels": None,
            },
            {"source": "input", "step": -1, "parents": {}},
            {},
        )


def _json(args: list[str]) -> dict[str, object]:
    result = runner.invoke(app, ["persistence", *args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)  # exactly one document


def _tree(root: Path) -> dict[str, str]:
    """Every file under ``root`` with a digest of its bytes."""
    if not root.exists():
        return {}
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != "chroma.lock"
    }


def _one_line_error(args: list[str], expected: str) -> str:
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    line = result.stderr.strip()
    assert "\n" not in line
    assert line.startswith("error: ")
    assert expected in line
    return line


def test_status_on_a_fresh_install_creates_nothing(isolated_env: Path) -> None:
    status = _json(["status"])
    assert status["memory"] == {
        "path": str(isolated_env / "chroma"),
        "size_bytes": 0,
        "agents": {},
        "staging": [],
    }
    assert status["checkpoints"]["threads"] == 0
    assert status["backups"]["count"] == 0
    assert set(status["schedule"]["tasks"]) == {  # type: ignore[call-overload]
        "snapshots",
        "vacuum",
        "backups",
        "compaction",
        "metrics",
    }
    assert not isolated_env.exists()


def test_human_output_prints_paths_whole_and_never_as_markup(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "data[bold]" / "x[/x]home"  # "[/x]" closes no tag: markup raised
    monkeypatch.setenv("MULTIAGENT_HOME", str(home))
    _seed()
    for args in (["status"], ["backup"], ["vacuum"], ["compact"], ["repair", "--check"]):
        result = runner.invoke(app, ["persistence", *args])
        assert result.exit_code == 0, (args, result.output)
        assert str(home) in result.stdout, args
    taken = runner.invoke(app, ["persistence", "snapshot"])
    assert taken.exit_code == 0, taken.output
    paths = [s["path"] for s in _json(["status"])["snapshots"]["agents"]["critic"]["files"]]
    assert any(path in taken.stdout.splitlines()[0] for path in paths)  # on one line, whole
    restored = runner.invoke(app, ["persistence", "restore", paths[0]])
    assert restored.exit_code == 0, restored.output
    assert restored.stdout.strip().endswith(paths[0])


def test_the_whole_cycle_from_the_command_line(isolated_env: Path) -> None:
    _seed()
    taken = _json(["snapshot"])["snapshots"]
    assert {s["agent"]: s["item_count"] for s in taken} == {"critic": 1, "researcher": 2}
    status = _json(["status"])
    assert status["memory"]["agents"] == {"critic": 1, "researcher": 2}
    snapshots = status["snapshots"]["agents"]
    assert snapshots["researcher"]["count"] == 1
    assert snapshots["researcher"]["total_bytes"] == os.path.getsize(
        snapshots["researcher"]["files"][0]["path"]
    )
    assert status["checkpoints"] == {
        **status["checkpoints"],
        "backend": "sqlite",
        "threads": 1,
        "checkpoints": 1,
    }
    assert status["schedule"]["tasks"]["backups"]["next_run"].endswith("01:00:00+00:00")

    backup = _json(["backup"])
    assert backup["details"]["backed_up"] is True
    vacuum = _json(["vacuum"])
    assert vacuum["chroma"]["operation"] == "vacuum"
    assert vacuum["checkpoints"]["backend"] == "sqlite"
    compact = _json(["compact"])
    assert sorted(compact["details"]["collections"].values()) == [1, 2]
    prune = _json(["prune", "--keep", "1", "--max-age-days", "36500"])
    assert prune["checkpoints_after"] == 1
    prune = _json(["prune"])  # the seeded thread is older than the profile's 30 days
    assert prune["threads_deleted"] == ["t-1"]
    assert prune["checkpoints_after"] == 0

    researcher = next(s for s in taken if s["agent"] == "researcher")
    with open_agent_memory(load_settings(), embeddings="lexical") as memory:
        memory.wipe("researcher")
    restored = _json(["restore", researcher["path"]])
    assert restored["restored"]["item_count"] == 2
    with open_agent_memory(load_settings(), embeddings="lexical") as memory:
        assert memory.recall("researcher", "capital of France", k=1) == [FACTS[0]]

    ran = _json(["scheduler", "--run-now", "snapshots"])
    assert ran["last_status"] == "ok"
    assert ran["last_result"]["agents"] == 2
    assert _json(["status"])["schedule"]["tasks"]["snapshots"]["last_status"] == "ok"


def _checkpoints(thread_id: str) -> int:
    with open_checkpointer(load_settings()) as saver:
        return len(list(saver.list({"configurable": {"thread_id": thread_id}})))


def test_prune_skips_a_thread_another_process_runs_now(isolated_env: Path) -> None:
    from multiagent.observability.live import live_writer

    for thread in ("busy", "idle"):
        ran = runner.invoke(
            app, ["run", "Plan a launch", "--agents", "critic", "--thread", thread, "--no-stream",
                  "--memory", "off"],
        )  # fmt: skip
        assert ran.exit_code == 0, ran.output
    live_writer(isolated_env).flush()
    busy = _checkpoints("busy")
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        with sqlite3.connect(isolated_env / "runs.sqlite") as conn:  # as that process's run left it
            conn.execute(
                "UPDATE runs SET status = 'running', pid = ?, updated = ? WHERE thread_id = 'busy'",
                (other.pid, time.time()),
            )
        pruned = _json(["prune", "--max-age-days", "0"])
        assert pruned["threads_deleted"] == ["idle"]
        assert pruned["skipped"] == {"busy": f"running in process {other.pid}"}
        assert _checkpoints("busy") == busy > 0
        human = runner.invoke(app, ["persistence", "prune", "--max-age-days", "0"])
        assert human.exit_code == 0, human.output
        assert f"skipped busy: running in process {other.pid}" in human.stdout
        assert _checkpoints("busy") == busy
        # the scheduler's weekly vacuum prunes by the profile's limits: one checkpoint kept
        scheduled = _json(["scheduler", "--run-now", "vacuum"])
        assert scheduled["last_status"] == "ok"
        assert scheduled["last_result"]["checkpoints"]["skipped"] == {
            "busy": f"running in process {other.pid}"
        }
        assert _checkpoints("busy") == busy
    finally:
        other.kill()
        other.wait()
    # a process gone leaves its row 'running': its thread is pruned like any other
    pruned = _json(["prune", "--max-age-days", "0"])
    assert pruned["threads_deleted"] == ["busy"]
    assert pruned["skipped"] == {}
    assert _checkpoints("busy") == 0


def test_a_task_run_now_is_reported_in_lines_and_a_failed_one_exits_1(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ran = runner.invoke(app, ["persistence", "scheduler", "--run-now", "vacuum"])
    assert ran.exit_code == 0, ran.output
    lines = ran.stdout.splitlines()
    assert lines[0].startswith("vacuum: ok in ")
    assert any(line.startswith("  checkpoints: {") for line in lines)

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr("multiagent.persistence.scheduler.prune_checkpoints", broken)
    failed = runner.invoke(app, ["persistence", "scheduler", "--run-now", "vacuum"])
    assert failed.exit_code == 1
    assert failed.stdout.startswith("vacuum: failed in ")
    assert failed.stdout.splitlines()[1] == "error: RuntimeError: disk full"


def test_scheduler_persists_metrics_through_the_observability_hook(isolated_env: Path) -> None:
    ran = _json(["scheduler", "--run-now", "metrics"])
    assert ran["last_status"] == "ok"
    assert Path(ran["last_result"]["path"]).is_file()  # the metrics history database


def test_foreground_scheduler_runs_and_reports(isolated_env: Path) -> None:
    document = _json(["scheduler", "--duration", "0.2", "--timezone", "Europe/Berlin"])
    assert document["timezone"] == "Europe/Berlin"
    assert document["scheduler"]["stopped_at"] is not None
    assert document["tasks"]["vacuum"]["next_run"] is not None


def test_bad_snapshots_exit_2_and_change_nothing(isolated_env: Path, tmp_path: Path) -> None:
    _seed()
    _json(["snapshot"])
    before = _tree(isolated_env)
    good = next((isolated_env / "snapshots").rglob("researcher-*.json.gz"))
    raw = json.loads(gzip.decompress(good.read_bytes()))
    truncated = tmp_path / "truncated.json.gz"
    truncated.write_bytes(good.read_bytes()[:100])
    foreign = tmp_path / "foreign.json.gz"
    foreign.write_bytes(gzip.compress(json.dumps({**raw, "schema_version": 99}).encode()))
    header = tmp_path / "header.json.gz"  # which embedder restores it: covered by the checksum
    header.write_bytes(gzip.compress(json.dumps({**raw, "embedder": "another"}).encode()))
    altered = tmp_path / "altered.json.gz"
    raw["payload"]["items"][0]["document"] = "Lyon is the capital of France."
    altered.write_bytes(gzip.compress(json.dumps(raw).encode()))
    cases = {
        str(tmp_path / "missing.json.gz"): "does not exist",
        str(truncated): "is truncated or not a gzip file",
        str(foreign): "has schema version 99",
        str(header): "fails its checksum",
        str(altered): "fails its checksum",
    }
    for path, expected in cases.items():
        _one_line_error(["persistence", "restore", path], expected)
        assert _tree(isolated_env) == before, path


def test_unreachable_postgres_exits_2(monkeypatch: pytest.MonkeyPatch, isolated_env: Path) -> None:
    monkeypatch.setenv("MULTIAGENT_CHECKPOINT_URL", "postgresql://app:hunter2@127.0.0.1:1/app")
    for command in (["prune"], ["status"], ["vacuum"]):
        line = _one_line_error(
            ["persistence", *command], "cannot connect to PostgreSQL at postgresql://***@127.0.0.1"
        )
        assert "hunter2" not in line


def test_unwritable_home_exits_2_and_creates_nothing(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    home = blocker / "home"
    for command in (
        ["snapshot"],
        ["restore", str(tmp_path / "x.json.gz")],
        ["prune"],
        ["backup"],
        ["vacuum"],
        ["compact"],
        ["scheduler", "--duration", "0"],
    ):
        _one_line_error(["--home", str(home), "persistence", *command], "is not writable")
    assert blocker.read_text() == "not a directory"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["scheduler", "--run-now", "defrag"], "unknown task 'defrag'; valid: snapshots"),
        (["scheduler", "--timezone", "Mars/Olympus"], "unknown time zone 'Mars/Olympus'"),
        (["scheduler", "--timezone", "", "--duration", "0"], "unknown time zone ''"),
        (["status", "--timezone", ""], "unknown time zone ''"),
        (["scheduler", "--metrics-hook", "nowhere:nothing"], "cannot load metrics hook"),
        (["snapshot", "--agent", "ghost"], "agent 'ghost' has no memory to snapshot"),
        (["prune", "--keep", "0"], "--keep"),
    ],
)
def test_bad_options_exit_2(isolated_env: Path, args: list[str], expected: str) -> None:
    _one_line_error(["persistence", *args], expected)
    assert not isolated_env.exists()  # nothing created for a bad value


def test_snapshot_of_an_agent_without_memory_changes_nothing(isolated_env: Path) -> None:
    _seed()
    before = _tree(isolated_env)
    line = _one_line_error(["persistence", "snapshot", "--agent", "ghost"], "agents: critic")
    assert "researcher" in line
    assert _tree(isolated_env) == before  # Chroma was not opened (opening rewrites its files)


def test_every_command_has_help() -> None:
    for command in ("status", "snapshot", "restore", "prune", "backup", "vacuum", "compact"):
        result = runner.invoke(app, ["persistence", command, "--help"])
        assert result.exit_code == 0
        assert "--json" in result.stdout
    assert runner.invoke(app, ["persistence", "scheduler", "--help"]).exit_code == 0


def test_clear_cache_drops_the_entries_so_the_same_run_calls_the_provider_again() -> None:
    def validate() -> dict[str, object]:
        result = runner.invoke(app, ["validate", "Water boils at 100 C.", "--json"])
        assert result.exit_code in (0, 3, 4), result.output
        return json.loads(result.stdout)

    first = validate()
    again = validate()  # answered by the analysis cache: no validator call
    assert again["this_run"]["calls"] == 0
    dropped = _json(["clear-cache", "--cache", "analysis"])
    assert dropped["dropped"] == {"analysis": first["this_run"]["calls"]}
    third = validate()
    assert third["this_run"]["calls"] == first["this_run"]["calls"]  # nothing left to reuse

    counted = _json(["clear-cache", "--counters"])
    assert set(counted["dropped"]) == {"completion", "analysis"}
    assert counted["counters_reset"] is True
    settings = load_settings()
    config = settings.profile.cache
    completion = open_completion_cache(settings.home, ttl_s=config.completion_ttl_s).stats()
    analysis = open_analysis_cache(settings.home, ttl_s=config.analysis_ttl_s).stats()["total"]
    assert (completion.hits, completion.misses, completion.entries) == (0, 0, 0)
    assert set(analysis.values()) == {0}

    bad = runner.invoke(app, ["persistence", "clear-cache", "--cache", "nope"])
    assert bad.exit_code == 2
    assert "unknown --cache 'nope'; valid: completion, analysis, all" in bad.stderr
