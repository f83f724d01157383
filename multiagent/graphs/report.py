"""A run's outcome as one JSON-ready document: output, contributions, tokens, cost, timings.

``this_run`` is the run ledger's totals: every call of this run, including those of a node that
raised (a structured-output failure after an answered call still cost its tokens). ``usage`` is
the thread's: every run's ledger totals, kept beside the thread at each run's end (see
:mod:`multiagent.persistence.run_usage`), so it never counts a call twice, keeps the calls of
nodes that raised in earlier runs, and agrees with the metrics and the traces.
"""

from __future__ import annotations

from typing import Any

from multiagent.graphs.run_outcome import WorkflowOutcome
from multiagent.nodes.usage import Usage, thread_totals, total_usage

_USAGE_KEYS = (
    "calls", "input_tokens", "output_tokens", "cost_usd", "cache_hits", "analysis_cache_hits",
    "seconds",
)  # fmt: skip


def _usage_of(entries: list[Usage], *, node: str, agent: str) -> dict[str, Any]:
    mine = [e for e in entries if e["node"] == node and e["agent"] == agent]
    summed: dict[str, Any] = total_usage(mine)
    summed["seconds"] = round(sum(e["seconds"] for e in mine), 4)
    return {key: summed[key] for key in _USAGE_KEYS}


def _orchestration(values: dict[str, Any], usage: list[Usage]) -> dict[str, Any]:
    contributions = [
        {**item, **_usage_of(usage, node="work", agent=item["agent"])}
        for item in values.get("contributions", [])
    ]
    return {
        "output": values.get("output", ""),
        "task": values.get("task", ""),
        "plan": values.get("plan", []),
        "rationale": values.get("rationale", ""),
        "approval": values.get("approval"),
        "contributions": contributions,
    }


def _meeting(values: dict[str, Any], usage: list[Usage]) -> dict[str, Any]:
    transcript = values.get("transcript", [])
    contributions = [
        {
            "agent": name,
            "turns": [u["text"] for u in transcript if u["agent"] == name],
            **_usage_of(usage, node="speak", agent=name),
        }
        for name in values.get("participants", [])
    ]
    return {
        "output": values.get("summary", ""),
        "topic": values.get("topic", ""),
        "rounds_held": max((u["round"] for u in transcript), default=0),
        "rounds": values.get("rounds"),
        "consensus": bool(values.get("consensus", False)),
        "assessments": values.get("assessments", []),
        "transcript": transcript,
        "contributions": contributions,
    }


def _validation(values: dict[str, Any], usage: list[Usage]) -> dict[str, Any]:
    results = values.get("results", [])
    contributions = [
        {"agent": name, **_usage_of(usage, node="validate", agent=name)}
        for name in values.get("validators", [])
    ]
    passed = sum(1 for r in results if r["passed"])
    return {
        "output": results[0] if len(results) == 1 else {"items": len(results), "passed": passed},
        "threshold": values.get("threshold"),
        "validators": values.get("validators", []),
        "results": results,
        "verdicts": values.get("verdicts", []),
        "failures": values.get("failures", []),
        "contributions": contributions,
    }


def thread_usage(outcome: WorkflowOutcome) -> dict[str, Any]:
    """The thread's usage: each run's totals (this run's from its ledger), and the node entries
    in state of a run that left no totals (see :mod:`multiagent.persistence.run_usage`)."""
    ledger = outcome.ledger
    runs = {**outcome.runs, ledger.run_id: ledger.totals()}
    return thread_totals(outcome.values.get("usage", []), runs)


def outcome_report(outcome: WorkflowOutcome) -> dict[str, Any]:
    """The document ``--json`` prints for a run."""
    values = outcome.values
    usage: list[Usage] = list(values.get("usage", []))
    body = {
        "orchestration": _orchestration,
        "meeting": _meeting,
        "validation": _validation,
    }[outcome.workflow](values, usage)
    return {
        "workflow": outcome.workflow,
        "thread_id": outcome.thread_id,
        "status": outcome.status,
        "message": outcome.message,
        "error": outcome.error,
        "resumed": outcome.resumed,
        **body,
        "usage": thread_usage(outcome),
        "this_run": {**outcome.ledger.totals(), "budget_usd": outcome.ledger.budget_usd},
        "interrupt": outcome.interrupt,
        "timings": {
            "total_s": outcome.seconds,
            "steps": [
                {"node": e["node"], "agent": e["agent"], "seconds": e["seconds"]} for e in usage
            ],
            "watched": outcome.timings,
        },
    }
