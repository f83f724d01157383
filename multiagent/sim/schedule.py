"""The capacity schedule: reading a schedule file, and which phase is in force at a given time.

A schedule file is JSON (a list of phases, or ``{"phases": [...]}``) or TOML (``[[phases]]``
tables). Every phase has a ``name`` and a ``duration_s``; the other keys of :class:`Phase`
override the server's base values for that phase. After the last phase, the last phase holds.
"""

from __future__ import annotations

import bisect
import json
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from multiagent._inputs import read_text_file
from multiagent.errors import UsageError
from multiagent.sim.config import Phase, PhaseCapacity

PHASE_KEYS = tuple(Phase.model_fields)


def load_schedule(path: str | Path) -> tuple[Phase, ...]:
    """Read the phases of a schedule file.

    Args:
        path: A ``.json`` or ``.toml`` file.

    Raises:
        UsageError: The file is missing, a directory, not UTF-8 text, unparsable, has no
            phases or a phase is invalid; the message names the file, the phase and the bad key.
    """
    file = Path(path)
    where = f"schedule file {file}"
    text = read_text_file(file, what="schedule file")
    suffix = file.suffix.lower()
    try:
        if suffix == ".json":
            data: Any = json.loads(text)
        elif suffix == ".toml":
            data = tomllib.loads(text)
        else:
            raise UsageError(f"{where}: unknown format {suffix or '(none)'!r}; use .json or .toml")
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise UsageError(f"{where} is not valid {suffix[1:].upper()}: {exc}") from None
    return parse_schedule(data, where=where)


def parse_schedule(data: Any, *, where: str = "schedule") -> tuple[Phase, ...]:
    """Validate already-parsed schedule data (a list of phases or ``{"phases": [...]}``).

    Args:
        data: The parsed document.
        where: How to name the schedule in error messages.

    Raises:
        UsageError: The document has no phases or a phase is invalid.
    """
    if isinstance(data, dict):
        extra = sorted(set(data) - {"phases"})
        if extra:
            raise UsageError(f"{where}: unknown top-level key {extra[0]!r}; valid: 'phases'")
        data = data.get("phases")
    if not isinstance(data, list) or not data:
        raise UsageError(f"{where}: needs a non-empty list of phases")
    phases: list[Phase] = []
    for number, item in enumerate(data, start=1):
        label = f"{where}: phase {number}"
        if not isinstance(item, dict):
            raise UsageError(f"{label} is not a table/object of keys")
        if isinstance(item.get("name"), str):
            label += f" ({item['name']!r})"
        try:
            phases.append(Phase.model_validate(item))
        except ValidationError as exc:
            raise UsageError(f"{label}: {_describe(exc)}") from None
    names = [phase.name for phase in phases]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise UsageError(f"{where}: phase name {duplicates[0]!r} is used twice; names must differ")
    return tuple(phases)


def _describe(exc: ValidationError) -> str:
    """The first problem of a phase as ``key: what is wrong``."""
    error = exc.errors()[0]
    key = ".".join(str(part) for part in error["loc"]) or "phase"
    if error["type"] == "extra_forbidden":
        return f"unknown key {key!r}; valid keys: {', '.join(PHASE_KEYS)}"
    if error["type"] == "missing":
        return f"missing key {key!r}"
    return f"{key}={error.get('input')!r}: {error['msg'].lower()}"


class PhaseClock:
    """Which phase is in force at a time; phase ``i`` starts at the sum of earlier durations."""

    def __init__(self, phases: Sequence[PhaseCapacity], *, start: float) -> None:
        """Start the schedule at ``start`` (a ``time.monotonic()`` value)."""
        self.phases = tuple(phases)
        self.start = start
        self._starts = [0.0]
        for phase in self.phases[:-1]:
            self._starts.append(self._starts[-1] + (phase.duration_s or 0.0))

    def index_at(self, now: float) -> int:
        """The index of the phase in force at ``now``; the last one holds forever."""
        return max(0, bisect.bisect_right(self._starts, now - self.start) - 1)

    def start_of(self, index: int) -> float:
        """When phase ``index`` starts (monotonic seconds)."""
        return self.start + self._starts[index]

    def end_of(self, index: int) -> float | None:
        """When phase ``index`` ends (monotonic seconds), ``None`` for the last phase."""
        if index + 1 >= len(self.phases):
            return None
        return self.start + self._starts[index + 1]
