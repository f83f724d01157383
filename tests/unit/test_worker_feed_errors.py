"""The feeder says a Redis error once while it lasts, and once that Redis answers again."""

from __future__ import annotations

from typing import Any

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from multiagent.distributed.worker_feed import EntryFeeder
from multiagent.distributed.worker_state import WorkerState


def test_a_lasting_redis_error_is_said_once_and_its_end_too(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    state = WorkerState()
    monkeypatch.setattr(state.stop, "wait", lambda timeout=None: False)
    feeder = EntryFeeder(
        None,  # type: ignore[arg-type]  # never reached: _take is replaced
        queue="q", consumer="c", state=state, prefetch=2, claim_idle_ms=1000, max_attempts=3,
    )  # fmt: skip
    outcomes: list[Any] = [RedisConnectionError("Connection refused")] * 5 + [[], "stop"]

    def take(room: int) -> list[Any]:
        found = outcomes.pop(0)
        if isinstance(found, Exception):
            raise found
        if found == "stop":
            state.stop.set()
            return []
        return list(found)

    monkeypatch.setattr(feeder, "_take", take)
    feeder.run(idle_exit_ms=None)
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == [
        "worker: Redis error, retrying every second: Connection refused",
        "worker: Redis answers again",
    ]
