"""``bench batch``: N validations at concurrency C against a fixed simulated latency.

Each validation is one validator call (a claim to judge) sent through
:func:`multiagent.models.batch.create_batch_completions`, i.e. through the whole pipeline
(shared backpressure, retries, accounting) to the simulated provider, whose every reply takes
exactly ``latency`` seconds. The same requests are then sent one by one. Target (DESIGN.md):
the batch finishes within 1.15 × ⌈N/C⌉ × latency.
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import asdict, dataclass
from typing import Any

from multiagent.bench.report import table, verdict
from multiagent.models.adaptive import reset_shared_controllers
from multiagent.models.batch import BatchSummary, create_batch_completions
from multiagent.policies import load_settings

TARGET_FACTOR = 1.15


@dataclass(frozen=True)
class BatchBenchResult:
    """Figures of one ``bench batch`` run."""

    items: int
    concurrency: int
    latency_s: float
    ideal_s: float
    batch: BatchSummary
    sequential: BatchSummary | None

    @property
    def ratio(self) -> float:
        """Batch wall time over the ideal ⌈N/C⌉ × latency."""
        return self.batch.wall_s / self.ideal_s

    @property
    def met(self) -> bool:
        """Whether the batch met 1.15 × ideal and every item succeeded."""
        return self.ratio <= TARGET_FACTOR and self.batch.failed == 0

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready figures with the target's verdict."""
        return {
            "items": self.items,
            "concurrency": self.concurrency,
            "latency_s": self.latency_s,
            "ideal_s": self.ideal_s,
            "batch": asdict(self.batch),
            "sequential": asdict(self.sequential) if self.sequential else None,
            "ratio_to_ideal": self.ratio,
            "speedup_over_sequential": (
                self.sequential.wall_s / self.batch.wall_s if self.sequential else None
            ),
            "target": {"max_ratio": TARGET_FACTOR, "met": self.met},
        }


def validation_requests(items: int) -> list[str]:
    """Distinct validator prompts (distinct, so the completion cache cannot help)."""
    return [
        f"Validate claim {i}: 'the migration plan for service {i} keeps every invariant'. "
        "Answer VALID or INVALID with one reason."
        for i in range(items)
    ]


def run_batch_bench(
    *, items: int = 40, concurrency: int = 8, latency_s: float = 0.25, sequential: bool = True
) -> BatchBenchResult:
    """Run the batch (and, unless ``sequential`` is false, the same one by one).

    Args:
        items: Validations in the batch.
        concurrency: Calls in flight at once.
        latency_s: The simulated provider's fixed reply latency.
        sequential: Also time the one-by-one run.
    """
    requests = validation_requests(items)
    with tempfile.TemporaryDirectory(prefix="multiagent-bench-batch-") as home:
        settings = load_settings(
            home=home,
            provider="sim",
            overrides={
                "sim.ttft_s": latency_s,
                "sim.token_latency_s": 0.0,
                "cache.completion_enabled": False,
                "rate_limit.max_concurrency": max(concurrency, 1),
                "rate_limit.requests_per_minute": 1_000_000,
                "rate_limit.tokens_per_minute": 1_000_000_000,
            },
        ).model_copy(update={"redis_url": None})  # this process's limiter, not a shared one
        reset_shared_controllers()
        batch = create_batch_completions(requests, max_concurrency=concurrency, settings=settings)
        one_by_one = None
        if sequential:
            reset_shared_controllers()
            one_by_one = create_batch_completions(requests, max_concurrency=1, settings=settings)
        reset_shared_controllers()
    ideal = math.ceil(items / concurrency) * latency_s
    return BatchBenchResult(
        items=items,
        concurrency=concurrency,
        latency_s=latency_s,
        ideal_s=ideal,
        batch=batch.summary,
        sequential=one_by_one.summary if one_by_one else None,
    )


def render_batch(result: BatchBenchResult) -> str:
    """The Markdown section for BENCHMARKS.md."""
    seq = result.sequential
    rows = [
        [
            f"batch, concurrency {result.concurrency}",
            f"{result.batch.wall_s:.3f} s",
            f"{result.ratio:.3f} × ideal ({result.ideal_s:.2f} s)",
            f"≤ {TARGET_FACTOR} × ideal",
            verdict(result.met),
        ]
    ]
    if seq is not None:
        rows.append(
            [
                "one by one",
                f"{seq.wall_s:.3f} s",
                f"{seq.wall_s / result.ideal_s:.2f} × ideal",
                "-",
                "-",
            ]
        )
    speedup = f" Speed-up over one by one: {seq.wall_s / result.batch.wall_s:.2f}×." if seq else ""
    return (
        f"{result.items} validator calls through `create_batch_completions` (the whole pipeline) "
        f"to the simulated provider with a fixed {result.latency_s * 1000:.0f} ms reply latency; "
        f"ideal = ⌈{result.items}/{result.concurrency}⌉ × latency = {result.ideal_s:.2f} s. "
        f"Succeeded {result.batch.succeeded}, failed {result.batch.failed}.{speedup}\n\n"
        + table(["run", "wall time", "vs ideal", "target", "verdict"], rows)
    )
