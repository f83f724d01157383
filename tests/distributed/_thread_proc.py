"""A process running the validation workflow on a given thread, for the thread budget tests.

``python _thread_proc.py '{"url": ..., "thread": ..., "budget": F, "processes": N}'`` waits until
``processes`` processes are ready, runs the workflow on the thread with that budget (Redis from
``MULTIAGENT_REDIS_URL``) and prints one JSON line: the status and what its ledger settled.
"""

from __future__ import annotations

import json
import sys
import time

import redis

from multiagent.graphs.inputs import validation_input
from multiagent.graphs.runner import run_workflow
from multiagent.nodes.context import build_context
from multiagent.policies import load_settings

TEXT = "The bakery opened in 1990. It sells bread and pastries, and employs three bakers."


def main() -> None:
    spec = json.loads(sys.argv[1])
    settings = load_settings()
    context = build_context(settings, budget_usd=spec["budget"])
    inputs = validation_input([TEXT], settings=settings, agents=context.agents, validators=3)
    if spec["processes"] > 1:
        gate = redis.Redis.from_url(spec["url"])
        gate.incr("test:ready")
        while int(gate.get("test:ready") or 0) < spec["processes"]:
            time.sleep(0.01)
    outcome = run_workflow(
        "validation", inputs, context=context, checkpointer=None, thread_id=spec["thread"]
    )
    print(json.dumps({"status": outcome.status, "spent": outcome.ledger.spent_usd}), flush=True)


if __name__ == "__main__":
    main()
