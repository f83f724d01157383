"""What one node's model calls used: calls, tokens, cost, cache hits and time.

A :class:`UsageMeter` counts a node's calls from the replies themselves, including cache hits
(LangChain marks them with ``total_cost: 0``), without depending on how the pipeline keeps its
own accounting. The node returns the figures as a
:class:`Usage` entry in state, so a resumed thread still knows what its completed nodes cost.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from langchain_core.messages import BaseMessage
from typing_extensions import TypedDict

from multiagent.policies import ModelPrice


class Usage(TypedDict):
    """One node's model usage."""

    node: str
    agent: str
    model: str
    calls: int
    input_tokens: int
    output_tokens: int
    cost_usd: float
    cache_hits: int
    seconds: float


class UsageMeter:
    """Counts the calls of one node from the replies it gets; not shared between threads.

    Reading the reply's ``usage_metadata`` (rather than listening to callbacks) costs nothing
    per call; LangChain marks a reply served from the completion cache with ``total_cost: 0``.
    """

    def __init__(self, *, node: str, agent: str, model: str, price: ModelPrice | None) -> None:
        self.node = node
        self.agent = agent
        self.model = model
        self.price = price
        self.calls = 0
        self.input_tokens = 0
        self.output_tokens = 0
        self.cost_usd = 0.0
        self.cache_hits = 0
        self._started = time.perf_counter()

    def record(self, message: BaseMessage) -> None:
        """Count one answered call."""
        usage: dict[str, Any] = dict(getattr(message, "usage_metadata", None) or {})
        tokens_in = int(usage.get("input_tokens", 0))
        tokens_out = int(usage.get("output_tokens", 0))
        self.calls += 1
        self.input_tokens += tokens_in
        self.output_tokens += tokens_out
        if "total_cost" in usage and not usage["total_cost"]:
            self.cache_hits += 1
        elif self.price is not None:
            self.cost_usd += self.price.cost(tokens_in, tokens_out)

    def usage(self) -> Usage:
        """The figures so far, as a state entry."""
        return Usage(
            node=self.node,
            agent=self.agent,
            model=self.model,
            calls=self.calls,
            input_tokens=self.input_tokens,
            output_tokens=self.output_tokens,
            cost_usd=round(self.cost_usd, 8),
            cache_hits=self.cache_hits,
            seconds=round(time.perf_counter() - self._started, 4),
        )


def total_usage(entries: Iterable[Usage]) -> dict[str, Any]:
    """Sum usage entries into calls, tokens, cost and cache hits."""
    items = list(entries)
    return {
        "calls": sum(e["calls"] for e in items),
        "input_tokens": sum(e["input_tokens"] for e in items),
        "output_tokens": sum(e["output_tokens"] for e in items),
        "cost_usd": round(sum(e["cost_usd"] for e in items), 6),
        "cache_hits": sum(e["cache_hits"] for e in items),
    }
