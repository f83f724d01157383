"""A process replaying a cache workload against the Redis caches, for the shared-cache tests.

``python _cache_proc.py '{"url": ..., "home": ..., "seed": N, "lookups": N, "prompts": N,
"processes": N}'`` waits until ``processes`` processes are ready, then makes ``lookups``
completion lookups (and as many analysis lookups) over ``prompts`` distinct prompts in an order
drawn from ``seed``, storing an answer after each miss. Prints one JSON line: the hits and
misses this process saw.
"""

from __future__ import annotations

import json
import random
import sys
import time
from pathlib import Path

import redis
from langchain_core.messages import AIMessage
from langchain_core.outputs import ChatGeneration

from multiagent.models.analysis_cache import open_analysis_cache
from multiagent.models.completion_cache import open_completion_cache


def main() -> None:
    spec = json.loads(sys.argv[1])
    home = Path(spec["home"])
    completions = open_completion_cache(home, ttl_s=3600, redis_url=spec["url"])
    analyses = open_analysis_cache(home, ttl_s=3600, redis_url=spec["url"])
    gate = redis.Redis.from_url(spec["url"])
    gate.incr("test:ready")
    while int(gate.get("test:ready") or 0) < spec["processes"]:
        time.sleep(0.01)
    rng = random.Random(spec["seed"])
    seen = {"hits": 0, "misses": 0, "analysis_hits": 0, "analysis_misses": 0}
    for _ in range(spec["lookups"]):
        prompt = f"prompt {rng.randrange(spec['prompts'])}"
        if completions.lookup(prompt, "sim:model") is None:
            seen["misses"] += 1
            answer = [ChatGeneration(message=AIMessage(content=f"answer to {prompt}"))]
            completions.update(prompt, "sim:model", answer)
        else:
            seen["hits"] += 1
        computed: list[str] = []

        def verdict(text: str = prompt, out: list[str] = computed) -> str:
            out.append(text)
            return text.upper()

        analyses.get_or_compute("verdict", prompt, verdict)
        seen["analysis_misses" if computed else "analysis_hits"] += 1
    print(json.dumps(seen), flush=True)


if __name__ == "__main__":
    main()
