"""A batch's usage counts the verdicts the analysis cache answered, as the metrics do."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.integration._batch_cli import cli, document, numbered_items, use_fast_provider


@pytest.fixture(autouse=True)
def fast_provider(monkeypatch: pytest.MonkeyPatch) -> None:
    use_fast_provider(monkeypatch)


def _batch_file(tmp_path: Path) -> Path:
    """Three distinct texts and one item repeating the first (validated once, shared)."""
    items: list[Any] = [*numbered_items(3)]
    items.append({"id": "again", "text": items[0]["text"]})
    path = tmp_path / "items.jsonl"
    path.write_text("".join(json.dumps(i) + "\n" for i in items), encoding="utf-8")
    return path


def _analysis_metrics() -> dict[str, Any]:
    shown = cli("metrics", "show", "--json")
    assert shown.exit_code == 0, shown.output
    return dict(document(shown)["cache"]["analysis"])


def test_a_batch_answered_from_the_analysis_cache_reports_those_hits(tmp_path: Path) -> None:
    batch = _batch_file(tmp_path)
    args = ("validate", "--batch", str(batch), "--validators", "2", "--concurrency", "2", "--json")
    first = document(cli(*args))
    assert first["status"] == "completed"
    assert first["usage"]["calls"] == 3 * 2  # distinct texts × validators
    assert first["usage"]["analysis_cache_hits"] == 0
    assert not any(r["cached"] for r in first["results"])
    assert _analysis_metrics()["hits"] == 0

    second = document(cli(*args))
    assert second["status"] == "completed"
    # nothing was sent, and the completion cache was never asked: its figures stay 0
    assert (second["usage"]["calls"], second["usage"]["cache_hits"]) == (0, 0)
    # one analysis-cache hit per verdict looked up: distinct texts × validators
    assert second["usage"]["analysis_cache_hits"] == 3 * 2
    assert second["this_run"]["analysis_cache_hits"] == 3 * 2
    assert [c["analysis_cache_hits"] for c in second["contributions"]] == [3, 3]
    assert [r["cached"] for r in second["results"]] == [True] * 4
    # the batch's figure is the metrics' figure: the same lookups, counted once
    metrics = _analysis_metrics()
    assert metrics["hits"] == first["usage"]["analysis_cache_hits"] + 3 * 2
    assert metrics["misses"] == 3 * 2


def test_the_text_report_names_the_analysis_cache_hits(tmp_path: Path) -> None:
    batch = _batch_file(tmp_path)
    args = ("validate", "--batch", str(batch), "--validators", "2", "--no-stream")
    assert cli(*args).exit_code in (0, 3)
    again = cli(*args)
    assert "6 analysis cache hits" in again.stdout, again.output
