"""``/healthz`` checks what it names: a broken home, database or scheduler is a 503."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx2

from multiagent.observability.server import run_metrics_server
from multiagent.policies import Settings, load_settings


def _settings(home: Path) -> Settings:
    return load_settings(home=home)


def test_a_healthy_home_is_200_with_each_check(tmp_path: Path) -> None:
    settings = _settings(tmp_path / "home")
    with run_metrics_server(settings) as url:
        reply = httpx2.get(f"{url}/healthz")
    assert reply.status_code == 200
    checks = reply.json()["checks"]
    assert checks["home"]["ok"]
    assert checks["databases"]["ok"]
    assert checks["scheduler"]["state"] == "not running"


def test_a_corrupt_database_fails_the_probe(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "metrics.sqlite").write_bytes(b"this is not a database" * 100)
    with run_metrics_server(_settings(home)) as url:
        reply = httpx2.get(f"{url}/healthz")
    assert reply.status_code == 503
    assert reply.json()["checks"]["databases"]["checked"]["metrics.sqlite"].startswith("error")


def test_an_unwritable_home_fails_the_probe(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    moved = tmp_path / "moved"
    with run_metrics_server(_settings(home)) as url:
        # the home goes bad while the server runs (settings refuse a bad one at start): root
        # writes into a read-only directory anyway, so the home becomes a regular file
        home.rename(moved)
        home.write_text("not a directory")
        try:
            reply = httpx2.get(f"{url}/healthz")
        finally:
            home.unlink()
            moved.rename(home)
    assert reply.status_code == 503
    assert reply.json()["checks"]["home"]["ok"] is False


def test_a_scheduler_that_died_without_stopping_fails_the_probe(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    record = {
        "version": 1,
        "scheduler": {"pid": int(gone.stdout), "started_at": "2026-01-01T00:00:00+00:00",
                      "stopped_at": None, "timezone": "UTC"},
        "tasks": {},
    }  # fmt: skip
    (home / "scheduler.json").write_text(json.dumps(record))
    with run_metrics_server(_settings(home)) as url:
        reply = httpx2.get(f"{url}/healthz")
    assert reply.status_code == 503
    assert reply.json()["checks"]["scheduler"]["state"] == "died"


def test_concurrent_probes_of_the_home_do_not_trip_over_each_other(tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from multiagent.persistence.checkpointer import ensure_home

    settings = _settings(tmp_path / "home")
    with ThreadPoolExecutor(max_workers=8) as pool:
        homes = list(pool.map(lambda _: ensure_home(settings), range(400)))
    assert set(homes) == {settings.home}
    assert list(settings.home.iterdir()) == []  # every probe cleaned up
