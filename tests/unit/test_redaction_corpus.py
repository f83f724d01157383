"""Detection measured on the labelled corpus (tests/data/pii_corpus.jsonl): recall ≥ 99% and
precision ≥ 97% per kind, on the part the detector was developed against and on the held-out part.

A gold span counts as found when one finding of the same kind covers all of it (a partial
finding would leave part of the value raw). A finding counts as correct when it overlaps a gold
span of its kind. Regenerate the corpus with ``python tests/data/make_pii_corpus.py``.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from multiagent.safety import KINDS, find_pii, redact_text

CORPUS = Path(__file__).resolve().parents[1] / "data" / "pii_corpus.jsonl"
RECALL_MIN, PRECISION_MIN = 0.99, 0.97


def _rows() -> list[dict[str, object]]:
    return [json.loads(line) for line in CORPUS.read_text(encoding="utf-8").splitlines()]


def score(rows: list[dict[str, object]]) -> dict[str, dict[str, float]]:
    """Per kind: gold spans, found, findings, correct findings, recall and precision."""
    gold, found, made, correct = Counter[str](), Counter[str](), Counter[str](), Counter[str]()
    for row in rows:
        spans = row["spans"]
        assert isinstance(spans, list)
        findings = find_pii(str(row["text"]))
        for span in spans:
            gold[span["kind"]] += 1
            found[span["kind"]] += any(
                f.kind == span["kind"] and f.start <= span["start"] and f.end >= span["end"]
                for f in findings
            )
        for f in findings:
            made[f.kind] += 1
            correct[f.kind] += any(
                s["kind"] == f.kind and f.start < s["end"] and s["start"] < f.end for s in spans
            )
    return {
        kind: {
            "gold": gold[kind],
            "found": found[kind],
            "findings": made[kind],
            "correct": correct[kind],
            "recall": found[kind] / gold[kind] if gold[kind] else 1.0,
            "precision": correct[kind] / made[kind] if made[kind] else 1.0,
        }
        for kind in KINDS
    }


def _table(name: str, table: dict[str, dict[str, float]]) -> str:
    lines = [f"{name}: kind       gold  recall   findings  precision"]
    for kind, row in table.items():
        lines.append(
            f"  {kind:10} {row['gold']:5.0f}  {row['recall']:7.2%}  {row['findings']:8.0f}"
            f"  {row['precision']:8.2%}"
        )
    return "\n".join(lines)


def test_the_corpus_is_large_mixed_and_holds_lookalikes() -> None:
    rows = _rows()
    assert len(rows) >= 500
    assert {row["lang"] for row in rows} == {"en", "id", "de"}
    assert {row["split"] for row in rows} == {"dev", "holdout", "blind"}
    assert sum(not row["spans"] for row in rows) >= 100  # texts with no PII at all
    assert sum(len(row["lookalikes"]) for row in rows) >= 300  # type: ignore[arg-type]
    for row in rows:  # every label points at the value it names
        for span in row["spans"]:  # type: ignore[attr-defined]
            assert span["end"] > span["start"]
            assert str(row["text"])[span["start"] : span["end"]].strip()


@pytest.mark.parametrize("split", ["dev", "holdout", "blind"])
def test_recall_and_precision_per_kind(split: str, capsys: pytest.CaptureFixture[str]) -> None:
    table = score([row for row in _rows() if row["split"] == split])
    with capsys.disabled():
        print("\n" + _table(split, table))
    for kind, row in table.items():
        assert row["gold"] > 0, kind
        assert row["recall"] >= RECALL_MIN, (kind, row)
        assert row["precision"] >= PRECISION_MIN, (kind, row)


def test_texts_without_pii_come_through_unchanged() -> None:
    clean = [row for row in _rows() if not row["spans"]]
    changed = [row["text"] for row in clean if redact_text(str(row["text"])).text != row["text"]]
    assert len(changed) <= len(clean) * 0.01, changed[:5]
