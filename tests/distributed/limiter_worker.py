"""A process of the shared-limiter tests: loops calling the simulator through one Redis controller.

``python limiter_worker.py REDIS_URL BASE_URL LOOPS CALLS [RPS] [hold]``: ``LOOPS`` threads each
make ``CALLS`` successful calls (a 429 is retried after the controller lets it go again), then
one JSON line of counts is printed, with ``requests``: every request sent, by the id it carried
(``x-request-id``), with when the controller let it go (``granted``: the Redis server's time of
its "go"; ``released``: this process's ``time.time()`` as the ``with`` body starts) and, for a
429, when its pause was known to every process (``known``: just after ``passage.failed``
returned, which wrote the pause to Redis). Redis runs on the same machine: one clock for all.
``hold`` instead takes every slot, prints ``held`` and sleeps (the test kills it).

Before its loops start, the process warms its HTTP client up (a ``/v1/models`` call: the
connection and the client's first-call work) and prints ``ready``; it starts when a line comes
on stdin, so every process starts together. A cold client's first request spent 20-180 ms
between the controller's "go" and its arrival at the simulator: a request the controller let go
before any 429 existed, arriving during one (and counted early) by no fault of the controller.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time

import openai

from multiagent.models.backpressure import BackpressureConfig
from multiagent.models.backpressure_redis import RedisBackpressureController, connect


def main() -> None:
    redis_url, base_url, loops, calls = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    rps = float(sys.argv[5]) if len(sys.argv) > 5 else 10.0
    config = BackpressureConfig(max_concurrency=loops, requests_per_s=rps)
    controller = RedisBackpressureController(
        config, client=connect(redis_url), key="test:bp:sim", lease_s=1.0
    )
    if len(sys.argv) > 6 and sys.argv[6] == "hold":
        tickets = [controller.acquire(tokens=1) for _ in range(loops)]
        print("held", len(tickets), flush=True)
        time.sleep(600)
    client = openai.OpenAI(base_url=base_url, api_key="sk-test", max_retries=0)
    client.models.list()
    print("ready", flush=True)
    sys.stdin.readline()
    counts = {"ok": 0, "rate_limited": 0}
    requests: list[dict[str, object]] = []
    lock = threading.Lock()

    def loop(number: int) -> None:
        done = attempt = 0
        while done < calls:
            attempt += 1
            request_id = f"{os.getpid()}-{number}-{attempt}"
            with controller.slot(tokens=50) as passage:
                record = {
                    "id": request_id,
                    "released": time.time(),
                    "granted": passage.ticket.sent_at,
                    "known": None,
                }
                with lock:
                    requests.append(record)
                try:
                    raw = client.chat.completions.with_raw_response.create(
                        model="gpt-4o-mini",
                        messages=[{"role": "user", "content": "hi"}],
                        max_tokens=16,
                        extra_headers={"x-request-id": request_id},
                    )
                except openai.RateLimitError as exc:
                    passage.failed(exc)
                    record["known"] = time.time()
                    with lock:
                        counts["rate_limited"] += 1
                    continue
                passage.answered(headers=dict(raw.headers))
                done += 1
                with lock:
                    counts["ok"] += 1

    threads = [threading.Thread(target=loop, args=(number,)) for number in range(loops)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    state = controller.state()
    summary = {**counts, "processes": state.processes, "in_flight": state.in_flight}
    print(json.dumps({**summary, "requests": requests}))
    controller.close()


if __name__ == "__main__":
    main()
