"""What one node's model calls used: calls, tokens, cost, cache hits and time.

``cache_hits`` are calls the completion cache answered; ``analysis_cache_hits`` are results the
analysis cache answered with no call at all (a validator's cached verdict), so neither counts
the other's.

A node's :class:`Usage` entry is made from the ledger's records of that node's execution (see
:class:`multiagent.nodes.calling.AgentCall`), not counted a second time from the replies, so the
usage kept in graph state agrees with the ledger, the metrics and the traces. The entry names the
run that made it: a report adds the entries of earlier runs of a thread to this run's ledger.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, NotRequired

from typing_extensions import TypedDict

from multiagent.models.ledger import AnalysisHit, CallRecord, totals_of


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
    run: NotRequired[str]
    errors: NotRequired[int]
    analysis_cache_hits: NotRequired[int]


def usage_from_records(
    records: Iterable[CallRecord],
    *,
    node: str,
    agent: str,
    model: str,
    seconds: float,
    run: str,
    analysis_hits: Iterable[AnalysisHit] = (),
) -> Usage:
    """The usage entry of one node execution whose calls are ``records`` (and whose results
    the analysis cache answered are ``analysis_hits``)."""
    totals = totals_of(records)
    return Usage(
        node=node,
        agent=agent,
        model=model,
        calls=totals["calls"],
        input_tokens=totals["input_tokens"],
        output_tokens=totals["output_tokens"],
        cost_usd=totals["cost_usd"],
        cache_hits=totals["cache_hits"],
        seconds=round(seconds, 4),
        run=run,
        errors=totals["errors"] + totals["cancelled"],
        analysis_cache_hits=sum(1 for _ in analysis_hits),
    )


def total_usage(entries: Iterable[Usage]) -> dict[str, Any]:
    """Sum usage entries into calls, tokens, cost and cache hits (of both caches)."""
    items = list(entries)
    return {
        "calls": sum(e["calls"] for e in items),
        "input_tokens": sum(e["input_tokens"] for e in items),
        "output_tokens": sum(e["output_tokens"] for e in items),
        "cost_usd": round(sum(e["cost_usd"] for e in items), 8),
        "cache_hits": sum(e["cache_hits"] for e in items),
        "analysis_cache_hits": sum(e.get("analysis_cache_hits", 0) for e in items),
    }


def thread_totals(
    entries: Iterable[Usage], runs: Mapping[str, Mapping[str, Any]]
) -> dict[str, Any]:
    """A thread's calls, tokens, cost and cache hits: each run's totals in ``runs`` (by run id,
    see :mod:`multiagent.persistence.run_usage`), plus the node entries of the runs not in it."""
    summed = total_usage(e for e in entries if e.get("run") not in runs)
    for totals in runs.values():
        for key in summed:  # the figures total_usage sums
            summed[key] += totals.get(key, 0)
    summed["cost_usd"] = round(summed["cost_usd"], 8)
    return summed
