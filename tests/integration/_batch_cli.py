"""What the local batch tests share: a provider limit far above what they send, one try per
call, the CLI through typer's runner, and numbered items."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from multiagent.cli import app
from multiagent.nodes.state import ValidationItem

runner = CliRunner()
FAST = {
    "MULTIAGENT_RATE_LIMIT__REQUESTS_PER_MINUTE": "600000",
    "MULTIAGENT_RATE_LIMIT__TOKENS_PER_MINUTE": "600000000",
    "MULTIAGENT_RATE_LIMIT__RETRY_ATTEMPTS": "1",
}


def use_fast_provider(monkeypatch: pytest.MonkeyPatch) -> None:
    """Set :data:`FAST` in the environment for the test."""
    for name, value in FAST.items():
        monkeypatch.setenv(name, value)


def cli(*args: str) -> Result:
    return runner.invoke(app, list(args))


def document(result: Result) -> dict[str, Any]:
    return dict(json.loads(result.stdout))


def numbered_items(count: int) -> list[ValidationItem]:
    """``count`` distinct items ``i0``, ``i1``..."""
    return [
        ValidationItem(id=f"i{n}", text=f"Oven {n} bakes rye at {200 + n} C.") for n in range(count)
    ]


def batch_file(folder: Path, count: int) -> Path:
    """A batch file of ``count`` numbered items in ``folder``."""
    path = folder / "items.jsonl"
    path.write_text("".join(json.dumps(i) + "\n" for i in numbered_items(count)), encoding="utf-8")
    return path
