"""Read a JSONL batch file into validation items, naming every malformed line.

A line's text follows the rule of text given on the command line, and its id the rule of
:func:`~multiagent.graphs.inputs.validation_input`, each problem said with its line number.
"""

from __future__ import annotations

import json
from pathlib import Path

from multiagent._inputs import check_text, item_id_problem, read_text_file
from multiagent.errors import UsageError
from multiagent.nodes.state import ValidationItem


def _item_of(number: int, line: str) -> tuple[ValidationItem | None, str | None]:
    try:
        data = json.loads(line)
    except json.JSONDecodeError:
        return None, f"line {number}: not JSON"
    if isinstance(data, str):
        data = {"text": data}
    if not isinstance(data, dict):
        return None, f"line {number}: expected an object with 'text' or a JSON string"
    text = data.get("text")
    if not isinstance(text, str) or not text.strip():
        return None, f"line {number}: no non-empty 'text'"
    try:  # the rule of text given on the command line, with the line
        check_text(text, source=f"line {number}: 'text'")
    except UsageError as exc:
        return None, str(exc)
    item_id = data.get("id", number)
    if not isinstance(item_id, str | int) or isinstance(item_id, bool):
        return None, f"line {number}: 'id' must be a string or an integer"
    if problem := item_id_problem(str(item_id)):  # the rule of validation_input, with the line
        return None, f"line {number}: {problem}"
    return ValidationItem(id=str(item_id), text=text), None


def read_batch_file(path: str | Path) -> list[ValidationItem]:
    """Read a JSONL batch: one ``{"id": ..., "text": ...}`` object (or JSON string) per line.

    Blank lines are skipped; a line without an ``id`` is numbered by its line. The file is read
    as every text file is (:func:`~multiagent._inputs.read_text_file`), so a leading byte order
    mark is dropped.

    Raises:
        UsageError: The file cannot be read, has no items, or has malformed lines (every bad
            line is named, with its number) or repeated ids.
    """
    file = Path(path)
    lines = read_text_file(file, what="batch file").splitlines()
    items: list[ValidationItem] = []
    problems: list[str] = []
    ids: dict[str, int] = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        item, problem = _item_of(number, line)
        if item is None:
            problems.append(str(problem))
            continue
        if item["id"] in ids:
            problems.append(f"line {number}: id {item['id']!r} repeats line {ids[item['id']]}")
            continue
        ids[item["id"]] = number
        items.append(item)
    if problems:
        raise UsageError(f"malformed batch file {file}: {'; '.join(problems)}")
    if not items:
        raise UsageError(f"batch file {file} has no items")
    return items
