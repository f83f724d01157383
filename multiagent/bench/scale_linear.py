"""``bench scale --linear``: time and memory per item of a batch stay flat as the batch grows.

Each size runs in a fresh process (so memory figures do not carry over) through
:func:`multiagent.graphs.batch.batch_cross_validate` with the in-process simulated provider at
zero latency, caches off and pacing out of the way: what is measured is the batch machinery
(chunked graph runs, storing, assembling), per item. Target (issue 9): the per-item cost at the
largest size is at most 1.5 × the smallest's, in time and in memory.

Small batches may not raise the peak resident memory past the warm-up's at all (0 KiB): no ratio
can be taken from such a size, so memory growth is measured from the smallest size that did
raise it, and is reported as not computable when no size below the largest did (calling it 1.0
claimed a flatness nobody measured).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from typing import Any

from multiagent.bench.report import table, verdict

TARGET_GROWTH = 1.5
DEFAULT_SIZES = (1_000, 10_000)

_CHILD = """
import json, resource, sys, time
from multiagent.graphs.batch import batch_cross_validate
from multiagent.nodes.context import build_context
from multiagent.policies import load_settings

size, validators, concurrency = (int(a) for a in sys.argv[1:4])
settings = load_settings(home=sys.argv[4], overrides={
    "sim.ttft_s": 0, "sim.token_latency_s": 0,
    "rate_limit.requests_per_minute": 100_000_000, "rate_limit.tokens_per_minute": 10**12,
    "cache.completion_enabled": False, "cache.analysis_enabled": False})
items = [{"id": str(n), "text": f"Claim {n}: oven {n} bakes rye at {n % 300} C."}
         for n in range(size)]
context = build_context(settings, analysis_cache=None, budget_usd=1e12)  # measure, never stop
batch_cross_validate(items[:50], settings=settings, validators=validators,
                     max_concurrency=concurrency, context=context)  # warm-up: imports, caches
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
began = time.perf_counter()
result = batch_cross_validate(items, settings=settings, validators=validators,
                              max_concurrency=concurrency, context=context)
seconds = time.perf_counter() - began
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"size": size, "seconds": seconds, "status": result.status,
                  "finished": len(result.results), "calls": result.usage["calls"],
                  "peak_growth_kb": max(0, after - before)}))
"""


@dataclass(frozen=True)
class SizeFigures:
    """One batch size's figures."""

    size: int
    seconds: float
    status: str
    finished: int
    calls: int
    peak_growth_kb: int

    @property
    def ms_per_item(self) -> float:
        """Wall milliseconds per item."""
        return 1000 * self.seconds / self.size

    @property
    def kb_per_item(self) -> float:
        """Growth of peak resident memory per item, KiB."""
        return self.peak_growth_kb / self.size


@dataclass(frozen=True)
class LinearScaleResult:
    """Every size's figures and the growth of per-item cost across them."""

    sizes: list[SizeFigures]
    validators: int
    concurrency: int

    @property
    def time_growth(self) -> float:
        """Largest per-item time over the smallest size's."""
        per = [s.ms_per_item for s in self.sizes]
        return max(per) / per[0]

    @property
    def memory_base(self) -> SizeFigures | None:
        """The smallest size below the largest whose batch raised the peak memory at all."""
        return next((s for s in self.sizes[:-1] if s.peak_growth_kb > 0), None)

    @property
    def memory_growth(self) -> float | None:
        """Per-item memory at the largest size over :attr:`memory_base`'s; ``None`` (not
        computable) when there is no such size."""
        base = self.memory_base
        return None if base is None else self.sizes[-1].kb_per_item / base.kb_per_item

    @property
    def met(self) -> bool:
        """Every item finished, and per-item time and memory (when computable) grew at most
        1.5×."""
        complete = all(s.finished == s.size for s in self.sizes)
        memory = self.memory_growth
        flat_memory = memory is None or memory <= TARGET_GROWTH
        return complete and self.time_growth <= TARGET_GROWTH and flat_memory

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready figures with the target's verdict."""
        base = self.memory_base
        return {
            "validators": self.validators,
            "concurrency": self.concurrency,
            "sizes": [
                {**asdict(s), "ms_per_item": s.ms_per_item, "kb_per_item": s.kb_per_item}
                for s in self.sizes
            ],
            "time_growth": self.time_growth,
            "memory_growth": self.memory_growth,
            "memory_growth_from_size": None if base is None else base.size,
            "target": {
                "max_growth": TARGET_GROWTH,
                "met": self.met,
                "memory_judged": self.memory_growth is not None,
            },
        }


def run_linear_bench(
    *, sizes: tuple[int, ...] = DEFAULT_SIZES, validators: int = 2, concurrency: int = 8
) -> LinearScaleResult:
    """Run one batch of each size, each in a fresh process, smallest first."""
    figures = []
    for size in sorted(sizes):
        with tempfile.TemporaryDirectory(prefix="multiagent-scale-") as home:
            done = subprocess.run(
                [sys.executable, "-c", _CHILD, str(size), str(validators), str(concurrency), home],
                capture_output=True, text=True, check=True,
            )  # fmt: skip
        figures.append(SizeFigures(**json.loads(done.stdout.strip().splitlines()[-1])))
    return LinearScaleResult(sizes=figures, validators=validators, concurrency=concurrency)


def render_linear(result: LinearScaleResult) -> str:
    """The Markdown section: a row per size, the growth of per-item cost, the verdict."""
    rows = [
        [f"{s.size:,}", s.status, f"{s.finished:,}", f"{s.calls:,}", f"{s.seconds:.1f}",
         f"{s.ms_per_item:.2f}", f"{s.kb_per_item:.2f}"]
        for s in result.sizes
    ]  # fmt: skip
    body = table(
        ["items", "status", "finished", "calls", "wall s", "ms / item", "peak KiB / item"], rows
    )
    return (
        f"{body}\n\n"
        f"In-process simulated provider at zero latency, caches and budget off, "
        f"{result.validators} "
        f"validators per item, {result.concurrency} calls in flight; each size in a fresh "
        "process after a 50-item warm-up.\n\n"
        f"Per-item time, largest over smallest size: **{result.time_growth:.2f}×**; per-item "
        f"peak memory: {memory_growth_text(result)} (target ≤ {TARGET_GROWTH}×): "
        f"{verdict(result.met)}.\n"
    )


def memory_growth_text(result: LinearScaleResult) -> str:
    """The memory growth figure as the report states it, saying what it is measured from."""
    base, growth = result.memory_base, result.memory_growth
    if base is None or growth is None:
        return (
            "not computable (no size below the largest raised the peak past the warm-up's, "
            "0 KiB), so the verdict is on time alone"
        )
    if base is result.sizes[0]:
        return f"**{growth:.2f}×**"
    return (
        f"**{growth:.2f}×**, measured from {base.size:,} items (the smaller sizes raised the "
        "peak by 0 KiB, which gives no ratio)"
    )
