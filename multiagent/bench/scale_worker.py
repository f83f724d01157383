"""One worker process of ``bench scale --processes``: ``python -m multiagent.bench.scale_worker``.

The parent passes a JSON :class:`WorkerSpec` as the only argument. The worker builds its
strategy's controller (one per process, as a deployed ``multiagent`` process would), opens its
``ChatOpenAI`` client, prints ``ready``, and waits for ``go T0`` on stdin (``T0``: the run's
start, wall-clock seconds, shared by every process on the machine). Its agent loops then call
the simulator one task after another until the schedule ends; it prints one JSON document:
its task records and the CPU seconds the loops used.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any

#: Strategies a worker can build; ``shared_adaptive`` needs the Redis-shared controller.
KINDS = ("per_process", "litellm", "shared_adaptive")
#: Module of the Redis-shared adaptive controller (imported only when that strategy runs).
REDIS_CONTROLLER_MODULE = "multiagent.models.backpressure_redis"
#: Seconds the loops get to finish once cancelled at the end of the schedule.
_DRAIN_S = 5.0


@dataclass(frozen=True)
class WorkerSpec:
    """What one worker process runs."""

    kind: str
    index: int
    url: str
    redis_url: str
    key: str
    model: str
    profile: str
    loops: int
    attempts: int
    max_tokens: int
    total_s: float
    nominal_rpm: int
    nominal_tpm: int

    def to_json(self) -> str:
        """The spec as the worker's argument."""
        return json.dumps(asdict(self))


def build_controller(spec: WorkerSpec) -> Any:
    """The process's controller-like object for ``spec.kind``.

    ``per_process``: the pipeline's in-process controller from the profile; ``litellm``: fixed
    per-minute counters in Redis with a cooldown on 429; ``shared_adaptive``: the adaptive
    controller whose state lives in Redis. ``spec.key`` names the shared state, fresh per run.
    """
    from multiagent.models.backpressure import BackpressureConfig, BackpressureController
    from multiagent.policies import load_settings

    rate_limit = load_settings(env=spec.profile).profile.rate_limit
    config = BackpressureConfig.from_profile(rate_limit)
    if spec.kind == "per_process":
        return BackpressureController(config, labels={"provider": spec.key, "model": spec.model})
    if spec.kind == "litellm":
        from multiagent.bench.scale_litellm import LiteLLMCounterController

        return LiteLLMCounterController(
            redis_url=spec.redis_url,
            deployment=spec.key,
            rpm=spec.nominal_rpm,
            tpm=spec.nominal_tpm,
        )
    if spec.kind == "shared_adaptive":
        import importlib

        module = importlib.import_module(REDIS_CONTROLLER_MODULE)
        return module.shared_redis_controller(
            provider=spec.key,
            model=spec.model,
            base_url=spec.url,
            config=config,
            redis_url=spec.redis_url,
        )
    raise ValueError(f"unknown strategy kind {spec.kind!r}; valid: {', '.join(KINDS)}")


async def _call(chat: Any, controller: Any, prompt: str, *, spec: WorkerSpec) -> None:
    """One task the way the pipeline makes it: each attempt through the controller, retried
    with full jitter and the server's Retry-After as a floor (as ``AdaptiveBackpressure``)."""
    from multiagent.models.adaptive import as_messages, estimate_tokens, response_headers
    from multiagent.models.retry import RetryPolicy, async_retrying

    tokens = estimate_tokens(as_messages(prompt), max_output=spec.max_tokens)
    async for attempt in async_retrying(RetryPolicy(attempts=spec.attempts), model=spec.model):
        with attempt:
            async with controller.aslot(tokens=tokens) as passage:
                message = await chat.ainvoke(prompt)
                passage.answered(headers=response_headers(message))


async def _loop(
    agent: int, chat: Any, controller: Any, spec: WorkerSpec, t0: float, out: list[list[Any]]
) -> None:
    task = 0
    while True:
        prompt = f"Worker {spec.index}, agent {agent}, task {task}: check the next item."
        task += 1
        start = time.monotonic() - t0
        error = None
        try:
            await _call(chat, controller, prompt, spec=spec)
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"[:200]
        out.append([start, time.monotonic() - t0, error is None, error])


async def _close(controller: Any) -> None:
    aclose, close = getattr(controller, "aclose", None), getattr(controller, "close", None)
    if callable(aclose):
        await aclose()
    elif callable(close):
        close()


async def run_worker(spec: WorkerSpec) -> dict[str, Any]:
    """Build, report ready, wait for the start, run the loops until the schedule ends."""
    from langchain_openai import ChatOpenAI

    controller = build_controller(spec)
    chat = ChatOpenAI(
        model=spec.model,
        base_url=spec.url,
        api_key="sim-key",  # type: ignore[arg-type]
        max_retries=0,
        max_tokens=spec.max_tokens,
        timeout=30,
        include_response_headers=True,
    )
    print("ready", flush=True)
    line = await asyncio.to_thread(sys.stdin.readline)
    start_wall = float(line.split()[1])
    # the run's start on this process's monotonic clock
    t0 = time.monotonic() - (time.time() - start_wall)
    cpu0 = time.process_time()
    tasks: list[list[Any]] = []
    loops = [
        asyncio.create_task(_loop(i, chat, controller, spec, t0, tasks)) for i in range(spec.loops)
    ]
    await asyncio.sleep(max(0.0, spec.total_s - (time.monotonic() - t0)))
    for loop in loops:
        loop.cancel()
    # a call inside the HTTP client was seen to ignore its cancellation (its task pending on a
    # future for minutes): waiting for it would hold the worker, and asyncio.run's shutdown
    # would wait for it again; its task was unfinished at the end anyway, so it is left out
    _done, stuck = await asyncio.wait(loops, timeout=_DRAIN_S)
    cpu = time.process_time() - cpu0
    await _close(controller)
    result = {"index": spec.index, "tasks": tasks, "cpu_s": cpu, "stuck": len(stuck)}
    if stuck:
        print(json.dumps(result), flush=True)
        os._exit(0)
    return result


def main() -> None:
    """Entry point: run the spec given as the first argument, print the result as JSON."""
    spec = WorkerSpec(**json.loads(sys.argv[1]))
    result = asyncio.run(run_worker(spec))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
