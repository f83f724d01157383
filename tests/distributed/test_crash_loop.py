"""A crash loop: an entry whose worker is SIGKILLed on every delivery is dead-lettered.

A killed worker reports no failure, so the failure count alone would hand the entry out forever;
the stream's delivery count (``XPENDING``) bounds it. The workers are real processes
(``poison_worker.py``: the worker command, killing itself on a poisoned item).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import redis
from typer.testing import CliRunner

from multiagent.cli import app
from multiagent.distributed.deadletter import dead_key
from multiagent.distributed.queue import batch_key, stream_key

pytestmark = [pytest.mark.redis, pytest.mark.slow]
WRAPPER = Path(__file__).with_name("poison_worker.py")
MAX_ATTEMPTS = 2
FAST = {
    "MULTIAGENT_RATE_LIMIT__REQUESTS_PER_MINUTE": "600000",
    "MULTIAGENT_RATE_LIMIT__TOKENS_PER_MINUTE": "600000000",
}


def _wait(condition: Any, *, seconds: float = 90.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_an_entry_whose_worker_is_killed_on_every_delivery_is_dead_lettered(
    redis_url: str, tmp_path: Path
) -> None:
    lines = [{"id": f"i{n}", "text": f"Oven {n} bakes rye at {200 + n} C."} for n in range(4)]
    lines.append({"id": "i4", "text": "POISON-PILL: this item kills its worker."})
    path = tmp_path / "items.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    queued = CliRunner().invoke(
        app, ["validate", "--batch", str(path), "--queue", "q1", "--validators", "2", "--json"]
    )
    assert queued.exit_code == 0, queued.output
    batch_id = json.loads(queued.stdout)["batch_id"]
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    assert client.xlen(stream_key("q1")) == 2  # four texts per entry: the poison is alone
    command = [
        sys.executable, str(WRAPPER), "worker", "--json", "--queue", "q1", "--concurrency", "1",
        "--claim-idle", "0.5", "--max-attempts", str(MAX_ATTEMPTS),
    ]  # fmt: skip
    env = {**os.environ, **FAST}
    killed = 0
    survivor = None
    for _start in range(MAX_ATTEMPTS + 3):  # a worker that never gives up would need them all
        proc = subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        _wait(lambda p=proc: p.poll() is not None or client.xlen(dead_key("q1")) > 0)
        if proc.poll() is None:
            survivor = proc
            break
        proc.communicate()
        assert proc.returncode == -signal.SIGKILL
        killed += 1
    assert survivor is not None, f"the poisoned entry was still handed out after {killed} kills"
    survivor.send_signal(signal.SIGTERM)
    out, err = survivor.communicate(timeout=60)
    assert survivor.returncode == 0, err
    stats = json.loads(out)
    # delivered MAX_ATTEMPTS times (each one killed its worker), buried on the next reclaim
    assert killed == MAX_ATTEMPTS
    assert stats["dead_letters"] == 1
    assert stats["chunks"] == 0  # the survivor never ran the poisoned chunk
    letters = client.xrange(dead_key("q1"))
    assert len(letters) == 1
    fields = letters[0][1]
    assert int(fields["attempts"]) == MAX_ATTEMPTS + 1
    assert json.loads(fields["unfinished"]) == ["i4"]
    assert "never finished" in fields["error"]
    assert client.xlen(stream_key("q1")) == 0
    assert sorted(client.hkeys(batch_key(batch_id, "records"))) == ["i0", "i1", "i2", "i3"]
    status = json.loads(CliRunner().invoke(app, ["batch", "status", batch_id, "--json"]).stdout)
    assert status["state"] == "failed"
    assert status["dead_items"] == 1
    assert status["finished"] == 4
