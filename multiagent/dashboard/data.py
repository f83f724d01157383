"""What the dashboard pages show, read from the shared stores of a data directory.

Live runs and limiter samples come from ``runs.sqlite`` (written by every run, see
:mod:`multiagent.observability.live`), the history from ``metrics.sqlite``, threads from the
checkpointer. Free text (streamed answers, subjects, state values) passes through the project's
redaction before it leaves the server.
"""

from __future__ import annotations

import functools
import json
import os
import time
from collections import defaultdict
from typing import Any

from multiagent.errors import UsageError
from multiagent.models.redaction import redact_text
from multiagent.observability.history import MetricsHistory
from multiagent.observability.live import read_live
from multiagent.persistence.scheduler_state import pid_alive
from multiagent.policies import Settings

#: Finished runs listed under the live ones.
RECENT_RUNS = 20
#: A limiter sample older than this is not "now".
CURRENT_S = 5.0


def redacted(value: Any) -> Any:
    """``value`` with every string redacted (dicts and lists walked; other values as text)."""
    if isinstance(value, str):
        return redact_text(value).text
    if isinstance(value, dict):
        return {str(k): redacted(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redacted(v) for v in value]
    if value is None or isinstance(value, bool | int | float):
        return value
    return redact_text(str(value)).text


@functools.cache
def graph_of(workflow: str) -> dict[str, Any]:
    """The nodes and edges of a workflow's graph (drawn by the page)."""
    from multiagent.graphs.workflows import WORKFLOWS, compile_workflow

    if workflow not in WORKFLOWS:
        return {"nodes": [], "edges": []}
    drawn = compile_workflow(workflow).get_graph()  # type: ignore[arg-type]
    nodes = [n for n in drawn.nodes if not n.startswith("__")]
    edges = [
        [e.source, e.target] for e in drawn.edges if not e.source.startswith("__")
    ]  # fmt: skip
    return {"nodes": nodes, "edges": edges}


def _streams(settings: Settings, thread_id: str) -> list[dict[str, Any]]:
    rows = read_live(
        settings.home,
        "SELECT kind, node, agent, text FROM events WHERE id IN (SELECT MAX(id) FROM events "
        "WHERE thread_id = ? AND kind LIKE 'stream:%' GROUP BY kind) ORDER BY id",
        (thread_id,),
    )
    return [{"node": r["node"], "agent": r["agent"], "text": r["text"]} for r in rows]


def _run_row(settings: Settings, row: Any) -> dict[str, Any]:
    status = row["status"]
    if status == "running" and not pid_alive(int(row["pid"]), since=float(row["updated"])):
        status = "lost"  # the process ended without saying how (killed)
    budget = row["budget_usd"]
    cost = float(row["cost_usd"])
    return {
        "thread_id": row["thread_id"],
        "workflow": row["workflow"],
        "status": status,
        "node": row["node"] or "",
        "started": row["started"],
        "updated": row["updated"],
        "tokens_in": row["tokens_in"],
        "tokens_out": row["tokens_out"],
        "cost_usd": round(cost, 8),
        "budget_usd": budget,
        "budget_left_usd": None if budget is None else round(max(0.0, budget - cost), 8),
        "graph": graph_of(row["workflow"]),
        "streams": _streams(settings, row["thread_id"]) if status == "running" else [],
    }


def live_runs(settings: Settings) -> dict[str, Any]:
    """Running runs (every process) with their streams, and the latest finished ones.

    A row left ``running`` by a killed process is finished (``lost``) and takes its place among
    the finished by its last update, not ahead of every run that ended after it.
    """
    rows = read_live(
        settings.home,
        "SELECT * FROM runs WHERE status = 'running' UNION ALL SELECT * FROM "
        "(SELECT * FROM runs WHERE status != 'running' ORDER BY updated DESC LIMIT ?)",
        (RECENT_RUNS,),
    )
    runs = sorted((_run_row(settings, row) for row in rows), key=lambda r: -float(r["updated"]))
    running = [r for r in runs if r["status"] == "running"]
    finished = [r for r in runs if r["status"] != "running"][:RECENT_RUNS]
    return {"running": running, "finished": finished}


def overview(settings: Settings, *, hours: int) -> dict[str, Any]:
    """The history's 5-minute points of the last ``hours`` and the error kinds seen."""
    points = MetricsHistory(settings).points(hours=hours)
    kinds = sorted({k for p in points for k in p["errors_by_kind"]})
    return {"hours": hours, "bucket_seconds": 300, "points": points, "error_kinds": kinds}


def backpressure(settings: Settings, *, minutes: int, now: float | None = None) -> dict[str, Any]:
    """Per provider+model: the limiter now and its series over the last ``minutes``.

    Samples of every process are added up per 2-second bin: in flight and goodput (answered
    calls per second) and 429s summed, the limit and the pause left the largest.
    """
    moment = time.time() if now is None else now
    rows = read_live(
        settings.home,
        'SELECT at, pid, provider, model, "limit", in_flight, paused_for_s, ok_total, '
        "rate_limited_total FROM limiter WHERE at >= ? ORDER BY at",
        (moment - minutes * 60 - 10,),
    )
    previous: dict[tuple[str, str, int], tuple[float, float, float]] = {}
    bins: dict[tuple[str, str], dict[int, dict[str, float]]] = defaultdict(dict)
    current: dict[tuple[str, str], dict[int, dict[str, Any]]] = defaultdict(dict)
    for r in rows:
        key = (r["provider"], r["model"])
        at, ok, limited = (
            float(r["at"]),
            float(r["ok_total"] or 0),
            float(r["rate_limited_total"] or 0),
        )
        before = previous.get((*key, r["pid"]))
        previous[(*key, r["pid"])] = (at, ok, limited)
        empty = {"limit": 0.0, "in_flight": 0.0, "paused_s": 0.0, "ok": 0.0, "r429": 0.0}
        cell = bins[key].setdefault(int(at // 2) * 2, empty)
        cell["limit"] = max(cell["limit"], float(r["limit"] or 0))
        cell["in_flight"] = max(cell["in_flight"], float(r["in_flight"] or 0))
        cell["paused_s"] = max(cell["paused_s"], float(r["paused_for_s"] or 0))
        if before is not None and at > before[0]:
            cell["ok"] += max(0.0, ok - before[1])
            cell["r429"] += max(0.0, limited - before[2])
        if moment - at <= CURRENT_S:
            current[key][r["pid"]] = {"at": at, "limit": r["limit"], "in_flight": r["in_flight"],
                                      "paused_for_s": r["paused_for_s"]}  # fmt: skip
    limiters = []
    for key in sorted(bins):
        series = sorted(bins[key].items())
        now_rows = list(current[key].values())
        paused_until = max((s["at"] + float(s["paused_for_s"] or 0) for s in now_rows), default=0)
        limiters.append(
            {
                "provider": key[0],
                "model": key[1],
                "processes": len(now_rows),
                "limit": max((float(s["limit"] or 0) for s in now_rows), default=None),
                "in_flight": sum(float(s["in_flight"] or 0) for s in now_rows),
                "paused_until": paused_until if paused_until > moment else None,
                "rate_limited": sum(c["r429"] for _, c in series),
                "series": {
                    "t": [t for t, _ in series],
                    "limit": [c["limit"] for _, c in series],
                    "in_flight": [c["in_flight"] for _, c in series],
                    "goodput": [c["ok"] / 2 for _, c in series],
                    "rate_limited": [c["r429"] for _, c in series],
                },
            }
        )
    shared = bool(settings.redis_url)
    return {"minutes": minutes, "shared_by_redis": shared, "limiters": limiters}


def _read_only(settings: Settings) -> bool:
    """Whether the checkpoints must be read without writing (the home may only be read)."""
    return not os.access(settings.home, os.W_OK | os.X_OK)


def threads(settings: Settings) -> list[dict[str, Any]]:
    """Every thread of the checkpointer, newest first (subjects redacted)."""
    from multiagent.graphs.threads import list_threads
    from multiagent.persistence.checkpointer import checkpoint_path, open_checkpointer

    if not settings.checkpoint_url and not checkpoint_path(settings).exists():
        return []
    with open_checkpointer(settings, read_only=_read_only(settings)) as saver:
        rows = list_threads(saver, limit=200)
    return [{**row, "subject": redacted(row.get("subject"))} for row in rows]


class UnknownThread(UsageError):
    """No such thread, or no such checkpoint of it (a store that cannot be opened is not this)."""


def thread_detail(settings: Settings, thread_id: str, checkpoint_id: str | None) -> dict[str, Any]:
    """A thread's state at a checkpoint (now by default) and its checkpoints, redacted.

    Raises:
        UnknownThread: Unknown thread or checkpoint.
        MultiagentError: The checkpointer cannot be opened (its database is down).
    """
    from multiagent.graphs.threads import thread_history, thread_state
    from multiagent.persistence.checkpointer import checkpoint_path, open_checkpointer

    if not settings.checkpoint_url and not checkpoint_path(settings).exists():
        raise UnknownThread(f"unknown thread {thread_id!r}; there are no threads yet")
    with open_checkpointer(settings, read_only=_read_only(settings)) as saver:
        try:
            state = thread_state(saver, thread_id, checkpoint_id=checkpoint_id)
            history = thread_history(saver, thread_id)
        except UsageError as exc:
            raise UnknownThread(str(exc)) from None
    for key in ("values", "interrupts", "errors"):  # free text; ids and times stay as they are
        state[key] = redacted(json.loads(json.dumps(state[key], default=str)))
    return {"state": state, "history": json.loads(json.dumps(history, default=str))}
