"""``bench cache``: replay a workload with a known share of repeats through the pipeline.

The workload is ``requests`` prompts of which a seeded, known share repeats an earlier prompt;
every repeat must be a hit and every first occurrence a miss, so the true hit rate is known
exactly. Each call goes through the full pipeline (``ModelPipeline.model_for(...).invoke``) with
the zero-latency simulated provider, in a fresh data directory and its own cache: switched on
whatever the configuration says, and on disk even with ``MULTIAGENT_REDIS_URL`` set (a shared
cache would hold earlier runs' answers and counts, and the run would fill it). Reported: the hit
rate the cache counts (its persistent counters) against the true one, and the latency of a hit as
a node sees it (the whole ``invoke``) and of the bare cache lookup.
"""

from __future__ import annotations

import random
import tempfile
import time
from dataclasses import asdict, dataclass
from typing import Any

from langchain_core.load import dumps
from langchain_core.messages import HumanMessage

from multiagent.bench.report import table, verdict
from multiagent.models._window import percentile
from multiagent.models.adaptive import reset_shared_controllers
from multiagent.models.completion_cache import CompletionCache
from multiagent.models.ledger import RunLedger
from multiagent.models.pipeline import ModelPipeline
from multiagent.policies import load_settings

HIT_P95_TARGET_MS = 2.0


@dataclass(frozen=True)
class CacheBenchResult:
    """Figures of one ``bench cache`` run."""

    requests: int
    repeat_share: float
    true_hits: int
    true_hit_rate: float
    reported_hits: int
    reported_misses: int
    reported_hit_rate: float
    ledger_cache_hits: int
    hit_invoke_p50_ms: float
    hit_invoke_p95_ms: float
    miss_invoke_p50_ms: float
    lookup_p50_ms: float
    lookup_p95_ms: float

    @property
    def rate_exact(self) -> bool:
        """The counted hit rate equals the true one (and the ledger agrees)."""
        return self.reported_hits == self.true_hits == self.ledger_cache_hits

    @property
    def latency_met(self) -> bool:
        """A hit returns within the target at p95."""
        return self.hit_invoke_p95_ms <= HIT_P95_TARGET_MS

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready figures with the targets' verdicts."""
        return {
            **asdict(self),
            "targets": {
                "hit_rate_exact": self.rate_exact,
                "hit_p95_ms": {"target": HIT_P95_TARGET_MS, "met": self.latency_met},
            },
        }


def workload(requests: int, repeat_share: float, *, seed: int = 7) -> tuple[list[str], int]:
    """Prompts with exactly ``round(requests × repeat_share)`` repeats of earlier prompts."""
    rng = random.Random(seed)
    repeats = round(requests * repeat_share)
    slots = set(rng.sample(range(1, requests), repeats)) if repeats else set()
    prompts: list[str] = []
    for i in range(requests):
        if i in slots:
            prompts.append(rng.choice(prompts))
        else:
            prompts.append(f"Task {i}: assess the risk of change request {rng.randrange(10**9)}")
    return prompts, repeats


def run_cache_bench(*, requests: int = 600, repeat_share: float = 0.35) -> CacheBenchResult:
    """Replay the workload in a fresh data directory and measure.

    Args:
        requests: Prompts to replay.
        repeat_share: Share of them that repeat an earlier prompt.
    """
    prompts, repeats = workload(requests, repeat_share)
    with tempfile.TemporaryDirectory(prefix="multiagent-bench-cache-") as home:
        reset_shared_controllers()
        settings = load_settings(
            home=home,
            provider="sim",
            overrides={
                "sim.ttft_s": 0.0,
                "sim.token_latency_s": 0.0,
                "rate_limit.requests_per_minute": 10_000_000,
                "rate_limit.tokens_per_minute": 10_000_000_000,
                "cache.completion_enabled": True,
            },
        ).model_copy(update={"redis_url": None})
        pipeline = ModelPipeline(settings)
        ledger = RunLedger()
        model = pipeline.model_for("standard", agent="bench", ledger=ledger)
        seen: set[str] = set()
        hit_ms: list[float] = []
        miss_ms: list[float] = []
        for prompt in prompts:
            started = time.perf_counter()
            model.invoke(prompt)
            elapsed = (time.perf_counter() - started) * 1000
            (hit_ms if prompt in seen else miss_ms).append(elapsed)
            seen.add(prompt)
        cache = pipeline.completion_cache
        assert cache is not None
        stats = cache.stats()
        lookup_ms = _bare_lookups(cache, prompts, llm_string=_llm_string(model, prompts[0]))
        reset_shared_controllers()
    return CacheBenchResult(
        requests=requests,
        repeat_share=repeat_share,
        true_hits=repeats,
        true_hit_rate=repeats / requests,
        reported_hits=stats.hits,
        reported_misses=stats.misses,
        reported_hit_rate=stats.hit_rate,
        ledger_cache_hits=ledger.totals()["cache_hits"],
        hit_invoke_p50_ms=percentile(hit_ms, 0.5),
        hit_invoke_p95_ms=percentile(hit_ms, 0.95),
        miss_invoke_p50_ms=percentile(miss_ms, 0.5),
        lookup_p50_ms=percentile(lookup_ms, 0.5),
        lookup_p95_ms=percentile(lookup_ms, 0.95),
    )


def _llm_string(model: Any, prompt: str) -> str:
    return str(model._get_llm_string())


def _bare_lookups(cache: CompletionCache, prompts: list[str], *, llm_string: str) -> list[float]:
    """Time ``lookup`` alone for every distinct prompt, all hits (counters restored after)."""
    before = cache.stats()
    timings = []
    for prompt in dict.fromkeys(prompts):
        serialised = dumps([HumanMessage(content=prompt)])
        started = time.perf_counter()
        found = cache.lookup(serialised, llm_string)
        timings.append((time.perf_counter() - started) * 1000)
        if found is None:
            raise RuntimeError("a stored completion was not found: the cache key is unstable")
    # these lookups are measurement, not workload: take them back out of the counters
    after = cache.stats()
    cache._store.count("hits", before.hits - after.hits)
    cache._store.count("misses", before.misses - after.misses)
    return timings


def render_cache(result: CacheBenchResult) -> str:
    """The Markdown section for BENCHMARKS.md."""
    rows = [
        [
            "reported hit rate = true hit rate",
            f"{result.reported_hit_rate:.4f} (counted {result.reported_hits} hits, "
            f"{result.reported_misses} misses) vs {result.true_hit_rate:.4f} "
            f"({result.true_hits} repeats of {result.requests})",
            "equal",
            verdict(result.rate_exact),
        ],
        [
            "cache hit, whole `invoke`, p95",
            f"{result.hit_invoke_p95_ms:.3f} ms (p50 {result.hit_invoke_p50_ms:.3f} ms)",
            f"≤ {HIT_P95_TARGET_MS:g} ms",
            verdict(result.latency_met),
        ],
        [
            "bare `CompletionCache.lookup`, p95",
            f"{result.lookup_p95_ms:.3f} ms (p50 {result.lookup_p50_ms:.3f} ms)",
            "-",
            "-",
        ],
        [
            "cache miss, whole `invoke` (zero-latency provider), p50",
            f"{result.miss_invoke_p50_ms:.3f} ms",
            "-",
            "-",
        ],
    ]
    return (
        f"Workload: {result.requests} prompts, {result.repeat_share:.0%} of them repeats of an "
        "earlier prompt (seeded), each sent through `ModelPipeline.model_for(...).invoke` with "
        "the zero-latency simulated provider, fresh data directory. The ledger counted "
        f"{result.ledger_cache_hits} cache hits.\n\n"
        + table(["measure", "measured", "target", "verdict"], rows)
    )
