"""What the process learned about each model's structured output, and how structured calls ended.

A step a model cannot take (no ``bind_tools``, a provider error answering it) is remembered per
model (provider and name) once another step has worked, so later calls skip it; the counts of how
structured calls ended, per node kind, are what a benchmark reports (valid at the first try,
after a fallback, after a repair, failed).
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal

from multiagent._metrics import get_metrics

Step = Literal["tool_call", "json_schema", "json_mode", "text"]
STEPS: tuple[Step, ...] = ("tool_call", "json_schema", "json_mode", "text")
#: How a structured call ended: its first model call validated, a later step did, a repair
#: round did, or nothing did.
Result = Literal["first_try", "fallback", "after_repair", "failed"]
RESULTS: tuple[Result, ...] = ("first_try", "fallback", "after_repair", "failed")


@dataclass
class _Known:
    refused: set[Step] = field(default_factory=set)
    working: Step | None = None


_LOCK = threading.Lock()
_KNOWN: dict[str, _Known] = {}


def model_key(model: object) -> str:
    """Who a model is, for remembering its structured-output methods: provider and name."""
    identity = getattr(model, "identity", None)
    if identity is not None:
        return f"{identity.provider}:{identity.model}"
    inner = getattr(model, "bound", model)
    name = getattr(inner, "model_name", None) or getattr(inner, "model", None) or ""
    return f"{type(inner).__name__}:{name}"


def known_method(model: object) -> Step | None:
    """The step that last produced a valid answer for ``model`` in this process."""
    with _LOCK:
        known = _KNOWN.get(model_key(model))
        return known.working if known else None


def refused_steps(model: object) -> frozenset[Step]:
    """Steps ``model`` cannot take, as learned in this process."""
    with _LOCK:
        known = _KNOWN.get(model_key(model))
        return frozenset(known.refused) if known else frozenset()


def learn(key: str, *, working: Step, refused: set[Step]) -> None:
    with _LOCK:
        known = _KNOWN.setdefault(key, _Known())
        known.working = working
        known.refused |= refused


class StructuredCounts:
    """How structured calls ended, per node kind and step (thread-safe).

    ``snapshot()`` gives ``{node: {"first_try": n, "fallback": n, "after_repair": n,
    "failed": n, "steps": {step: n}}}``; the same counts go to the metrics store as
    ``structured_calls_total{node,result,step}``.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[tuple[str, Result, str]] = Counter()

    def add(self, *, node: str, result: Result, step: str) -> None:
        """Count one structured call of ``node`` that ended in ``result`` at ``step``."""
        with self._lock:
            self._counts[(node, result, step)] += 1
        labels = {"node": node, "result": result, "step": step}
        get_metrics().inc("structured_calls_total", labels=labels)

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """The counts so far, per node."""
        with self._lock:
            items = list(self._counts.items())
        out: dict[str, dict[str, Any]] = {}
        for (node, result, step), n in sorted(items):
            entry = out.setdefault(node, {**dict.fromkeys(RESULTS, 0), "steps": {}})
            entry[result] += n
            entry["steps"][step] = entry["steps"].get(step, 0) + n
        return out

    def reset(self) -> None:
        """Forget every count."""
        with self._lock:
            self._counts.clear()


#: The process's counts of structured calls (read by benchmarks and reports).
STRUCTURED_COUNTS = StructuredCounts()


def reset_structured_state() -> None:
    """Forget what was learned about models and the counts (tests, a benchmark's start)."""
    with _LOCK:
        _KNOWN.clear()
    STRUCTURED_COUNTS.reset()
