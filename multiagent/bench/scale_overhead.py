"""``bench scale --redis-overhead``: what the Redis path adds to one call, on loopback.

Each variant times ``acquire`` + ``release`` of a controller around zero-latency work, one call
after another, ``calls`` times after a warm-up: the in-process adaptive controller (the
reference), the Redis-shared adaptive controller (``multiagent.models.backpressure_redis``,
when this build has it) and LiteLLM's counter path (:mod:`multiagent.bench.scale_litellm`, one
script call to acquire, one pipeline to release), measured as a labelled stand-in for the Redis
path until the shared controller is merged. Limits are far above what the loop can reach, so
no variant ever waits: what is timed is the bookkeeping and the round trips. The last variant
adds a batch's Redis budget (:class:`multiagent.models.budget_redis.RedisBudget`) to the shared
controller: a reservation before the call and its settlement after, the whole Redis path of a
queued batch's call with ``--budget``.
"""

from __future__ import annotations

import importlib
import time
import uuid
from dataclasses import asdict, dataclass
from typing import Any

from multiagent.bench.report import table, verdict
from multiagent.bench.scale_litellm import LiteLLMCounterController
from multiagent.bench.scale_processes import unavailable_reason
from multiagent.bench.scale_worker import REDIS_CONTROLLER_MODULE
from multiagent.models._window import percentile
from multiagent.models.adaptive import reset_shared_controllers
from multiagent.models.backpressure import BackpressureConfig, BackpressureController

#: Milliseconds the Redis path may add to a call (median), DESIGN.md.
TARGET_ADDED_MS = 1.0
REFERENCE = "in_process"
SHARED = "redis_adaptive"
STAND_IN = "litellm_counters (stand-in)"
WITH_BUDGET = "redis_adaptive + budget"


class _Budgeted:
    """A controller whose every call also reserves and settles in a Redis budget."""

    def __init__(self, controller: Any, budget: Any) -> None:
        self.controller, self.budget = controller, budget

    def acquire(self, *, tokens: int) -> tuple[Any, str]:
        return self.controller.acquire(tokens=tokens), self.budget.reserve(0.001)

    def release(self, held: tuple[Any, str]) -> None:
        self.controller.release(held[0])
        self.budget.settle(held[1], 0.0005)

    def close(self) -> None:
        _close(self.controller)
        self.budget.close()


@dataclass(frozen=True)
class OverheadFigures:
    """One variant's per-call cost of acquire + release."""

    variant: str
    calls: int
    median_ms: float
    p95_ms: float
    added_median_ms: float
    added_p95_ms: float


def _config() -> BackpressureConfig:
    # a pace and concurrency no sequential loop reaches: nothing waits
    return BackpressureConfig(
        max_concurrency=64, requests_per_s=1e7, tokens_per_s=None, burst_s=1.0
    )


def _time(controller: Any, *, calls: int, warmup: int) -> list[float]:
    samples = []
    for n in range(warmup + calls):
        began = time.perf_counter()
        ticket = controller.acquire(tokens=20)
        controller.release(ticket)
        if n >= warmup:
            samples.append((time.perf_counter() - began) * 1000)
    return samples


def _close(controller: Any) -> None:
    close = getattr(controller, "close", None)
    if callable(close):
        close()


def run_redis_overhead(
    *, redis_url: str, calls: int = 2000, warmup: int = 200
) -> tuple[list[OverheadFigures], str]:
    """Time every available variant; returns the figures and why a variant is missing ("")."""
    variants: list[tuple[str, Any]] = [
        (REFERENCE, BackpressureController(_config(), labels={"provider": "bench"}))
    ]
    missing = unavailable_reason("shared_adaptive")
    if not missing:
        module = importlib.import_module(REDIS_CONTROLLER_MODULE)

        def shared() -> Any:
            # each variant its own key: one's state must not pace the other
            return module.shared_redis_controller(
                provider=f"bench-overhead-{uuid.uuid4().hex[:8]}",
                model="gpt-4o-mini",
                base_url="http://127.0.0.1:9/v1",
                config=_config(),
                redis_url=redis_url,
            )

        from multiagent._redis import open_redis
        from multiagent.models.budget_redis import RedisBudget, budget_key

        budget = RedisBudget(
            open_redis(redis_url), key=budget_key("batch", f"bench-{uuid.uuid4().hex[:8]}"),
            cap_usd=10.0**9, label="batch budget",
        )  # fmt: skip
        variants.append((SHARED, shared()))
        variants.append((WITH_BUDGET, _Budgeted(shared(), budget)))
    deployment = f"bench-overhead-{uuid.uuid4().hex[:8]}"
    variants.append(
        (STAND_IN, LiteLLMCounterController(
            redis_url=redis_url, deployment=deployment, rpm=10**12, tpm=10**15))
    )  # fmt: skip
    timed: dict[str, list[float]] = {}
    try:
        for name, controller in variants:
            timed[name] = _time(controller, calls=calls, warmup=warmup)
    finally:
        for _, controller in variants:
            _close(controller)
        reset_shared_controllers()  # and out of the registry and the metrics, before Redis goes
    ref = timed[REFERENCE]
    ref_median, ref_p95 = percentile(ref, 0.5), percentile(ref, 0.95)
    figures = [
        OverheadFigures(
            variant=name,
            calls=len(values),
            median_ms=percentile(values, 0.5),
            p95_ms=percentile(values, 0.95),
            added_median_ms=percentile(values, 0.5) - ref_median,
            added_p95_ms=percentile(values, 0.95) - ref_p95,
        )
        for name, values in timed.items()
    ]
    return figures, missing


def render_overhead(figures: list[OverheadFigures], missing: str) -> str:
    """The Markdown section for BENCHMARKS.md."""
    rows = [
        [f.variant, f.calls, f"{f.median_ms:.3f}", f"{f.p95_ms:.3f}",
         "-" if f.variant == REFERENCE else f"{f.added_median_ms:.3f}",
         "-" if f.variant == REFERENCE else f"{f.added_p95_ms:.3f}"]
        for f in figures
    ]  # fmt: skip
    text = (
        "`acquire` + `release` per call around zero-latency work, one call after another, "
        "Redis on loopback (ms; 'added' = variant − in-process).\n\n"
        + table(
            ["variant", "calls", "median ms", "p95 ms", "added median ms", "added p95 ms"], rows
        )
    )
    judged = next((f for f in figures if f.variant == SHARED), None)
    if judged is None:
        judged = next(f for f in figures if f.variant == STAND_IN)
        text += (
            f"\n\n`{SHARED}`: {missing}. LiteLLM's counter path (one round trip to acquire, one "
            "to release) stands in for the Redis path until it is merged."
        )
    budgeted = next((f for f in figures if f.variant == WITH_BUDGET), None)
    if budgeted is not None:
        text += (
            f"\n\nWith a batch's Redis budget as well (`{WITH_BUDGET}`: the limiter's scripts "
            "and one budget script per call, the settlement riding with the next reservation): "
            f"{budgeted.added_median_ms:.3f} ms added: "
            f"{verdict(budgeted.added_median_ms <= TARGET_ADDED_MS)}."
        )
    text += (
        f"\n\nTarget: the Redis path adds ≤ {TARGET_ADDED_MS:g} ms per call (median) — "
        f"`{judged.variant}` adds {judged.added_median_ms:.3f} ms: "
        f"{verdict(judged.added_median_ms <= TARGET_ADDED_MS)}."
    )
    return text


def overhead_document(figures: list[OverheadFigures], missing: str) -> dict[str, Any]:
    """The JSON document of a run."""
    return {"variants": [asdict(f) for f in figures], "redis_adaptive_missing": missing}
