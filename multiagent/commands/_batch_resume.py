"""``validate --queue NAME --thread ID --resume [--budget USD]``: resume a queued batch stopped on
its budget, or complete the items of one whose validators failed after retries (only those
validators are asked again), and the line that says how (``batch status|results``, ``--wait``).

The work is :func:`multiagent.distributed.queue_resume.resume_batch`'s; this is its command,
which prints or follows the resumed batch as :mod:`multiagent.commands.batch` does a new one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from multiagent.commands._shared import console, err_console
from multiagent.errors import UsageError
from multiagent.policies import Settings


def resume_queued(
    settings: Settings,
    *,
    queue: str,
    thread: str | None,
    budget: float | None,
    wait: bool,
    as_json: bool,
) -> None:
    """Resume queued batch ``thread``, stopped on its budget, under the new total ``budget``,
    and complete its incomplete items; print its id, or follow it to its end and exit with its
    code (as a new one is followed)."""
    from multiagent.commands.batch import print_or_follow
    from multiagent.distributed.queue_resume import resume_batch
    from multiagent.distributed.redis import redis_client, require_redis_url

    if thread is None:
        raise UsageError("--resume needs --thread ID (the batch id printed when it was queued)")
    url = require_redis_url(settings, what="--queue")
    with redis_client(url) as client:
        resumed = resume_batch(
            client, thread, queue=queue, budget_usd=budget, worst_case=_worst_case(settings)
        )
        summary = {"batch_id": resumed.batch_id, "queue": resumed.queue, "items": resumed.items,
                   "incomplete": resumed.incomplete, "chunks": resumed.chunks,
                   "budget_usd": resumed.budget_usd, "spent_usd": resumed.spent_usd}  # fmt: skip
        what = [f"{resumed.items} unfinished items"] if resumed.items else []
        if resumed.incomplete:
            what.append(f"{resumed.incomplete} incomplete items (their failed validators only)")
        print_or_follow(
            client, resumed.batch_id, wait=wait, as_json=as_json, summary=summary,
            queued=f"{' and '.join(what)} queued again on {queue}",
            following=f"batch {resumed.batch_id} resumed on queue {queue}",
        )  # fmt: skip


def _worst_case(settings: Settings) -> Callable[[Sequence[str], str], float | None]:
    """The worst case of validating a text with given validators, as a worker with these
    settings admits an item (:func:`~multiagent.graphs.batch_budget.item_worst_case`);
    ``None`` when a validator is no agent here (the workers load an agents file this process
    does not have)."""
    from multiagent.graphs.batch_budget import item_worst_case
    from multiagent.nodes.agents_file import load_agents
    from multiagent.nodes.context import build_context

    def of(validators: Sequence[str], text: str) -> float | None:
        agents = load_agents(settings)
        if any(name not in agents for name in validators):
            return None
        context = build_context(settings, agents=agents, analysis_cache=None)
        return item_worst_case(context, validators)(text)

    return of


def resume_hint(client: Any, document: dict[str, Any]) -> str | None:
    """How to resume a batch stopped on its budget, or one that ended with incomplete items
    (``incomplete_count`` of ``document``), as a local batch says it; else ``None``."""
    from multiagent.distributed.queue import batch_key
    from multiagent.distributed.queue_resume import resume_command

    if document["kind"] != "batch":
        return None
    batch_id = document["batch_id"]
    queue, budget = client.hmget(batch_key(batch_id), ["queue", "budget_usd"])
    incomplete = int(document.get("incomplete_count") or 0)
    if document["state"] in ("completed", "failed") and incomplete:  # ended: completes them
        command = resume_command(batch_id, str(queue), budgeted=False)
        return (
            f"{incomplete} item{'s' if incomplete != 1 else ''} incomplete (validators gave no "
            f"verdict); --resume asks only those validators again: {command}"
        )
    if document["state"] != "budget_exceeded":
        return None
    command = resume_command(batch_id, str(queue), budgeted=budget is not None)
    if budget is None:  # stopped on the workers' profile budget: raised where they run
        return f"stopped on the workers' budget; resume once it is raised: {command}"
    return f"stopped on its budget; resume with a larger budget: {command}"


def print_hint(hint: str | None, *, as_json: bool) -> None:
    """Print ``hint`` (on stderr when stdout holds one JSON document)."""
    if hint is not None:
        (err_console if as_json else console).print(hint, highlight=False, soft_wrap=True)
