"""What this process's metrics say about its model calls, for tests that stop or cancel them."""

from __future__ import annotations

from multiagent._metrics import get_metrics
from multiagent.observability.summary import summarize


def recorded_calls() -> dict[str, int]:
    """Model calls this process recorded, by outcome (``ok``, ``cancelled``, ``error``, ...)."""
    return {k: int(v) for k, v in summarize(get_metrics().snapshot().counters)["calls"].items()}
