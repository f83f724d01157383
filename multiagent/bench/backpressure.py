"""``bench backpressure``: agent loops against a simulator whose capacity changes, per strategy.

The simulator runs as its own process with a five-phase schedule: baseline; capacity cut to
40% (20 → 8 req/s by default, as in issue 8); latency ×4 with 5% server errors; recovery;
capacity raised by half. Two simulators run: one advertises its limits in ``x-ratelimit-*``
headers (as OpenAI does), the other advertises none (as vLLM, Ollama and llama.cpp's server;
its 429s still carry a Retry-After). For each strategy the schedule is restarted
(``POST /sim/reset``) and ``loops`` concurrent agent loops call the real ``ChatOpenAI`` client
over HTTP, one task after another, until the schedule ends:

- ``none``: no limiter, the OpenAI SDK's own retries (which honour ``Retry-After``);
- ``token_bucket``: LangChain's ``InMemoryRateLimiter`` at the profile's configured rate, SDK
  retries;
- ``adaptive``: :class:`~multiagent.models.adaptive.AdaptiveBackpressure` configured from the
  profile's ``rate_limit`` section exactly as the pipeline configures it, against the server
  that advertises its limits;
- ``adaptive_blind``: the same controller, same configuration, against the server that does not.

Nothing of the schedule reaches a strategy: they start from what the profile says. All
strategies get the same number of attempts per task. The simulator's counters give goodput,
429s and early sends per phase; the clients' records give failed tasks and latency.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from langchain_core.language_models import LanguageModelInput
from langchain_core.messages import BaseMessage
from langchain_core.rate_limiters import InMemoryRateLimiter
from langchain_core.runnables import Runnable

from multiagent.bench.bp_figures import PhaseFigures, PhaseSpec, TaskRecord, phase_figures
from multiagent.bench.simproc import sim_call, sim_process
from multiagent.errors import UsageError
from multiagent.models.adaptive import AdaptiveBackpressure
from multiagent.models.backpressure import BackpressureConfig, BackpressureController
from multiagent.models.retry import RetryPolicy
from multiagent.policies import RateLimitConfig, load_settings
from multiagent.sim.config import Phase

STRATEGIES = ("none", "token_bucket", "adaptive", "adaptive_blind")


@dataclass(frozen=True)
class BackpressureBenchConfig:
    """Shape of the run; the defaults keep it to a few minutes on two cores."""

    phase_s: float = 15.0
    loops: int = 32
    capacity_rps: float = 20.0
    ttft_ms: float = 100.0
    token_latency_ms: float = 5.0
    max_tokens: int = 8
    attempts: int = 5
    strategies: tuple[str, ...] = STRATEGIES
    model: str = "gpt-4o-mini"
    profile: str = "dev_balanced"
    cut_share: float = 0.4

    def __post_init__(self) -> None:
        unknown = [s for s in self.strategies if s not in STRATEGIES]
        if unknown or not self.strategies:
            raise UsageError(
                f"unknown strategy {', '.join(unknown) or '(none given)'}; "
                f"valid: {', '.join(STRATEGIES)}"
            )
        if self.loops < 1 or self.phase_s < 1:
            raise UsageError(
                f"need loops >= 1 and phase seconds >= 1, got {self.loops}, {self.phase_s}"
            )
        self.rate_limit()  # an unknown profile fails here, before any simulator starts

    def phases(self) -> list[Phase]:
        """The five-phase schedule."""
        rpm, d = self.capacity_rps * 60, self.phase_s
        return [
            Phase(name="baseline", duration_s=d),
            Phase(name="capacity_cut", duration_s=d, rpm=rpm * self.cut_share),
            Phase(name="latency_x4_errors", duration_s=d, latency_multiplier=4, error_rate=0.05),
            Phase(name="recovery", duration_s=d),
            Phase(name="capacity_raise", duration_s=d, rpm=rpm * 1.5),
        ]

    def specs(self) -> list[PhaseSpec]:
        """Phases with their capacities in requests per second."""
        return [
            PhaseSpec(p.name, p.duration_s, (p.rpm or self.capacity_rps * 60) / 60)
            for p in self.phases()
        ]

    def rate_limit(self) -> RateLimitConfig:
        """The profile's ``rate_limit`` section: where the strategies start."""
        return load_settings(env=self.profile).profile.rate_limit

    def server_flags(self, *, blind: bool = False) -> list[str]:
        """Base limits and latency of the simulator (``blind``: no limit headers)."""
        return [*(["--no-limit-headers"] if blind else []),
            "--rpm", f"{self.capacity_rps * 60:g}", "--tpm", "100000000",
            "--max-concurrency", "64", "--ttft-ms", f"{self.ttft_ms:g}",
            "--token-latency-ms", f"{self.token_latency_ms:g}", "--seed", "1",
        ]  # fmt: skip


@dataclass
class StrategyRun:
    """What one strategy's run recorded."""

    strategy: str
    tasks: list[TaskRecord] = field(default_factory=list)
    series: list[tuple[float, list[dict[str, int]]]] = field(default_factory=list)
    final: list[dict[str, int]] = field(default_factory=list)
    controller: list[dict[str, Any]] = field(default_factory=list)


def _chat(config: BackpressureBenchConfig, url: str, *, retries: int, **extra: Any) -> Any:
    from langchain_openai import ChatOpenAI

    return ChatOpenAI(
        model=config.model,
        base_url=url,
        api_key="sim-key",  # type: ignore[arg-type]
        max_retries=retries,
        max_tokens=config.max_tokens,
        timeout=30,
        **extra,
    )


def build_strategy(
    name: str, config: BackpressureBenchConfig, url: str
) -> tuple[Runnable[LanguageModelInput, BaseMessage], BackpressureController | None]:
    """The model the agent loops call under strategy ``name``, and its controller if any."""
    sdk_retries = config.attempts - 1
    rate_limit = config.rate_limit()
    if name == "none":
        return _chat(config, url, retries=sdk_retries), None
    if name == "token_bucket":
        limiter = InMemoryRateLimiter(
            requests_per_second=rate_limit.requests_per_minute / 60,
            check_every_n_seconds=0.005,
            max_bucket_size=1,
        )
        return _chat(config, url, retries=sdk_retries, rate_limiter=limiter), None
    controller = BackpressureController(
        BackpressureConfig.from_profile(rate_limit),
        labels={"provider": "sim-http", "model": config.model},
    )
    chat = _chat(config, url, retries=0, include_response_headers=True)
    retry = RetryPolicy(attempts=config.attempts)
    return AdaptiveBackpressure(chat, controller=controller, retry=retry), controller


async def _agent_loop(
    agent: int,
    model: Runnable[LanguageModelInput, BaseMessage],
    t0: float,
    run: StrategyRun,
) -> None:
    task = 0
    while True:
        prompt = f"Agent {agent}, task {task}: check the next work item and report."
        task += 1
        start = time.monotonic() - t0
        error = None
        try:
            await model.ainvoke(prompt)
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"[:200]
        end = time.monotonic() - t0
        run.tasks.append(TaskRecord(start=start, end=end, ok=error is None, error=error))


def _counts(stats: dict[str, Any]) -> list[dict[str, int]]:
    return [dict(phase["counts"]) for phase in stats["phases"]]


async def _poll(
    url: str, t0: float, run: StrategyRun, controller: BackpressureController | None
) -> None:
    while True:
        stats = await asyncio.to_thread(sim_call, "GET", url, "/sim/stats")
        at = time.monotonic() - t0
        run.series.append((at, _counts(stats)))
        if controller is not None:
            state = controller.state()
            run.controller.append(
                {
                    "t": round(at, 2),
                    "rate": round(state.rate_per_s, 2),
                    "limit": state.limit,
                    "advertised": state.advertised_requests_per_s,
                }
            )
        await asyncio.sleep(0.25)


async def _run_strategy(
    name: str, config: BackpressureBenchConfig, url: str, total_s: float
) -> StrategyRun:
    model, controller = build_strategy(name, config, url)
    run = StrategyRun(strategy=name)
    await asyncio.to_thread(sim_call, "POST", url, "/sim/reset")
    t0 = time.monotonic()
    workers = [asyncio.create_task(_agent_loop(i, model, t0, run)) for i in range(config.loops)]
    poller = asyncio.create_task(_poll(url, t0, run, controller))
    await asyncio.sleep(max(0.0, total_s - (time.monotonic() - t0)))
    for worker in [*workers, poller]:
        worker.cancel()
    await asyncio.gather(*workers, poller, return_exceptions=True)
    await asyncio.sleep(0.2)  # let the server notice the aborted requests
    run.final = _counts(await asyncio.to_thread(sim_call, "GET", url, "/sim/stats"))
    return run


def run_backpressure_bench(
    config: BackpressureBenchConfig, *, progress: Callable[[str], None] | None = None
) -> tuple[list[PhaseFigures], list[StrategyRun]]:
    """Run every strategy through the schedule against one simulator process.

    All strategies run in one event loop: the OpenAI client's pooled connections belong to the
    loop that opened them.

    Args:
        config: Phases, loops, capacity and strategies.
        progress: Called with a line before each strategy starts.
    """
    specs = config.specs()
    total_s = sum(s.duration_s for s in specs)

    async def run_all(urls: dict[bool, str]) -> list[StrategyRun]:
        runs = []
        for name in config.strategies:
            if progress is not None:
                progress(
                    f"{name}: {len(specs)} phases x {config.phase_s:g} s, {config.loops} loops"
                )
            url = urls[name.endswith("_blind")]
            runs.append(await _run_strategy(name, config, url, total_s))
        return runs

    phases = config.phases()
    with (
        sim_process(phases, server_flags=config.server_flags()) as advertising,
        sim_process(phases, server_flags=config.server_flags(blind=True)) as blind,
    ):
        runs = asyncio.run(run_all({False: advertising, True: blind}))
    figures: list[PhaseFigures] = []
    for run in runs:
        figures.extend(phase_figures(run.strategy, specs, run.final, run.tasks, run.series))
    return figures, runs


def describe(config: BackpressureBenchConfig) -> str:
    """How the run was set up, for the report."""
    specs: Sequence[PhaseSpec] = config.specs()
    schedule = "; ".join(f"{s.name} {s.capacity_rps:g} req/s" for s in specs)
    rate = config.rate_limit()
    return (
        f"Simulator (own process, loopback HTTP): {config.phase_s:g} s per phase — {schedule}; "
        f"latency {config.ttft_ms:g} ms to first token + {config.token_latency_ms:g} ms per "
        f"token (×4 in `latency_x4_errors`, which also fails 5% of requests with 500/503); "
        f"token buckets hold 1 s of capacity. {config.loops} concurrent agent loops per strategy "
        f"call `ChatOpenAI` (max_tokens={config.max_tokens}), {config.attempts} attempts per "
        "task. Goodput = successful requests / (capacity × phase length), from the simulator's "
        "counters; tasks and latency (task start to answer, waits and retries included) from "
        "the clients, by the phase a task started in. 's to adapt' = seconds from the phase's "
        "start until every later 2-s window (slid by 0.5 s) admits ≥ 90% of capacity with ≤ 5% "
        "429s ('never' when the phase ends badly); 's to 95%' = seconds from the phase's "
        "start from which successes to the phase's end, counted from then or any later moment, "
        "stay ≥ 95% of capacity (how long a change took to be met; a probing controller meets "
        "it although single windows dip); 'goodput after 3 s' counts from 3 s into the phase "
        "(the adaptation allowance). Every strategy starts from the "
        f"`{config.profile}` profile's `rate_limit` ({rate.requests_per_minute / 60:g} req/s, "
        f"{rate.max_concurrency} concurrent): `token_bucket` paces at that rate, `adaptive` "
        "and `adaptive_blind` use the pipeline's controller configured from it; `adaptive` "
        "meets a simulator that advertises its limits, `adaptive_blind` one that does not "
        "(the baselines ignore those headers either way)."
    )
