"""A process that spends from a Redis budget, for the multi-process budget tests.

``python _budget_proc.py '{"mode": ..., "url": ..., ...}'`` prints one JSON line when done:

- ``hammer``: once ``processes`` processes are ready, ``threads`` threads each reserve
  ``usd`` and settle ``usd`` until refused;
- ``hold``: reserve ``usd``, print ``held``, then sleep (the test kills it); with
  ``"store": "sqlite"`` from the SQLite project budget at ``path`` instead of Redis;
- ``item``: admit one item of worst case ``usd`` to batch ``batch``'s budget, pay one call of
  ``cost`` from its hold, print ``held`` once Redis counted it, then sleep (the test kills it);
- ``steady``: reserve and settle ``usd`` until the file ``stop`` exists (Redis may go away
  meanwhile), then reconcile until nothing is kept.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

import redis

from multiagent.errors import BudgetExceededError
from multiagent.models.budget import SQLiteProjectBudget
from multiagent.models.budget_redis import redis_project_budget, shared_budget, to_nano


def _item(spec: dict[str, Any]) -> None:
    """Hold an item's worst case, pay one of its calls from the hold, then wait to be killed."""
    from multiagent.distributed.worker_admission import admit_items

    budget = shared_budget(
        spec["url"], kind="batch", name=spec["batch"], lease_s=spec["lease_s"],
        degraded_fraction=0.1,
    )  # fmt: skip
    item = {"id": "i0", "text": "Oven 0 bakes rye."}
    held, _items = admit_items(budget, deque([[item]]), worst_case=lambda _text: spec["usd"])
    held.settle(held.reserve(spec["usd"] / 2), spec["cost"])
    budget.reconcile()  # the draw is in Redis: what the killed worker paid is counted
    print("held", flush=True)
    time.sleep(3600)


def main() -> None:
    spec = json.loads(sys.argv[1])
    if spec.get("store") == "sqlite":
        store = SQLiteProjectBudget(
            Path(spec["path"]), daily_usd=spec["cap"], lease_s=spec["lease_s"]
        )
        store.reserve(float(spec["usd"]))
        print("held", flush=True)
        time.sleep(3600)  # a call that takes long: the test kills the process
    if spec["mode"] == "item":
        _item(spec)
    budget = redis_project_budget(
        spec["url"], daily_usd=spec["cap"], lease_s=spec.get("lease_s", 600.0),
        degraded_fraction=spec.get("fraction", 0.1),
    )  # fmt: skip
    usd = float(spec["usd"])
    settled = [0]
    refused = [0]
    lock = threading.Lock()
    if spec["mode"] == "hold":
        budget.reserve(usd)
        print("held", flush=True)
        time.sleep(3600)
    if spec["mode"] == "hammer":
        # start together: every process waits until all of them are ready
        gate = redis.Redis.from_url(spec["url"])
        gate.incr("test:ready")
        while int(gate.get("test:ready") or 0) < spec["processes"]:
            time.sleep(0.01)

        def spend() -> None:
            while True:
                try:
                    rid = budget.reserve(usd)
                except BudgetExceededError:
                    return
                budget.settle(rid, usd)
                with lock:
                    settled[0] += 1

        threads = [threading.Thread(target=spend) for _ in range(spec["threads"])]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    if spec["mode"] == "steady":
        stop = Path(spec["stop"])
        while not stop.exists():
            try:
                rid = budget.reserve(usd)
            except BudgetExceededError:  # the local reserve is spent: wait for Redis
                refused[0] += 1
                time.sleep(0.05)
                continue
            time.sleep(0.005)
            budget.settle(rid, usd)
            settled[0] += 1
        while not budget.reconcile():
            time.sleep(0.2)
    print(
        json.dumps(
            {"settled": settled[0], "settled_nano": settled[0] * to_nano(usd),
             "refused": refused[0], "report": budget.report()}
        ),
        flush=True,
    )  # fmt: skip


if __name__ == "__main__":
    main()
