"""``multiagent bench ...``: the benchmarks behind BENCHMARKS.md.

Each command measures, prints (a table, or one JSON document with ``--json``) and, unless
``--no-report``, rewrites its own section of BENCHMARKS.md with the figures and the exact
command line. More benchmarks mount here as further commands of :data:`bench_app`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from multiagent.commands._shared import JsonOption, console, err_console, print_json
from multiagent.errors import UsageError

bench_app = typer.Typer(
    name="bench",
    help="Benchmarks: backpressure, batch, cache, local, overhead, scale, startup (BENCHMARKS.md).",
    no_args_is_help=True,
)


def _one_report_choice(ctx: typer.Context, param: typer.CallbackParam, value: Any) -> Any:
    """Refuse ``--report PATH --no-report`` before the benchmark runs (whichever comes second
    sees the other: click processes the options given in their order, defaults after)."""
    other = "no_report" if param.name == "report" else "report"
    if value and ctx.params.get(other):
        raise UsageError("--report and --no-report contradict each other; give one of them")
    return value


ReportOption = Annotated[
    Path | None,
    typer.Option(
        "--report",
        help="Markdown file to write (default: the checkout's BENCHMARKS.md).",
        callback=_one_report_choice,
    ),
]
NoReportOption = Annotated[
    bool,
    typer.Option("--no-report", help="Do not write the report.", callback=_one_report_choice),
]


def _write(
    name: str,
    title: str,
    body: str,
    *,
    report: Path | None,
    no_report: bool,
    ctx: typer.Context | None = None,
) -> str | None:
    """Write the section (command line rebuilt from ``ctx`` when given, else ``sys.argv``)."""
    if no_report:
        return None
    from multiagent.bench.report import command_line, default_report_path, write_section

    path = report or default_report_path()
    write_section(path, name, title=title, command=command_line(ctx), body=body)
    return str(path)


def _emit(document: dict[str, Any], body: str, *, as_json: bool, written: str | None) -> None:
    if as_json:
        print_json({**document, "report": written})
        return
    console.print(body, markup=False, highlight=False)
    if written:
        console.print(f"\nwritten to {written}", style="dim")


@bench_app.command("local")
def local(
    ctx: typer.Context,
    rounds: Annotated[int, typer.Option(min=1, help="Passes over the prompts.")] = 2,
    max_tokens: Annotated[int, typer.Option(min=8, help="Output bound of every call.")] = 64,
    no_workflows: Annotated[
        bool, typer.Option("--no-workflows", help="Skip the timed workflows.")
    ] = False,
    report: ReportOption = None,
    no_report: NoReportOption = False,
    as_json: JsonOption = False,
) -> None:
    """A real model in process: framework vs direct llama.cpp tokens/s, workflow wall times."""
    from multiagent.bench.local import render_local, run_local_bench

    result = run_local_bench(rounds=rounds, max_tokens=max_tokens, workflows=not no_workflows)
    body = render_local(result)
    written = _write(
        "local", "Real model (local)", body, report=report, no_report=no_report, ctx=ctx
    )
    _emit(result.as_dict(), body, as_json=as_json, written=written)


@bench_app.command("cache")
def cache(
    ctx: typer.Context,
    requests: Annotated[int, typer.Option(min=10, help="Prompts to replay.")] = 600,
    repeat_share: Annotated[
        float, typer.Option(min=0.0, max=0.9, help="Share of prompts that repeat an earlier one.")
    ] = 0.35,
    report: ReportOption = None,
    no_report: NoReportOption = False,
    as_json: JsonOption = False,
) -> None:
    """Replay a workload with a known share of repeats: counted vs true hit rate, hit latency."""
    from multiagent.bench.cache import render_cache, run_cache_bench

    result = run_cache_bench(requests=requests, repeat_share=repeat_share)
    body = render_cache(result)
    written = _write("cache", "Completion cache", body, report=report, no_report=no_report, ctx=ctx)
    _emit(result.as_dict(), body, as_json=as_json, written=written)


@bench_app.command("batch")
def batch(
    ctx: typer.Context,
    items: Annotated[int, typer.Option(min=1, help="Validations in the batch.")] = 40,
    concurrency: Annotated[int, typer.Option(min=1, max=64, help="Calls in flight.")] = 8,
    latency_ms: Annotated[
        float, typer.Option(min=1.0, help="Fixed latency of every simulated reply.")
    ] = 250.0,
    no_sequential: Annotated[
        bool, typer.Option("--no-sequential", help="Skip the one-by-one comparison run.")
    ] = False,
    report: ReportOption = None,
    no_report: NoReportOption = False,
    as_json: JsonOption = False,
) -> None:
    """N validations at concurrency C vs one by one; target ≤ 1.15 × ⌈N/C⌉ × latency."""
    from multiagent.bench.batch import render_batch, run_batch_bench

    result = run_batch_bench(
        items=items,
        concurrency=concurrency,
        latency_s=latency_ms / 1000,
        sequential=not no_sequential,
    )
    body = render_batch(result)
    written = _write("batch", "Batch validation", body, report=report, no_report=no_report, ctx=ctx)
    _emit(result.as_dict(), body, as_json=as_json, written=written)


@bench_app.command("backpressure")
def backpressure(
    ctx: typer.Context,
    phase_seconds: Annotated[
        float, typer.Option(min=1.0, help="Length of each of the five phases.")
    ] = 15.0,
    loops: Annotated[int, typer.Option(min=1, max=256, help="Concurrent agent loops.")] = 32,
    capacity: Annotated[
        float, typer.Option(min=1.0, help="Baseline capacity of the simulator, requests/s.")
    ] = 20.0,
    strategies: Annotated[
        str,
        typer.Option(help="Comma-separated: none, token_bucket, adaptive, adaptive_blind."),
    ] = "none,token_bucket,adaptive,adaptive_blind",
    profile: Annotated[
        str, typer.Option(help="Profile whose rate_limit section the strategies start from.")
    ] = "dev_balanced",
    quick: Annotated[
        bool, typer.Option("--quick", help="2-second phases: a smoke run, not a measurement.")
    ] = False,
    report: ReportOption = None,
    no_report: NoReportOption = False,
    as_json: JsonOption = False,
) -> None:
    """Agent loops through ChatOpenAI against a simulator whose capacity changes, per strategy."""
    from multiagent.bench.backpressure import (
        BackpressureBenchConfig,
        describe,
        run_backpressure_bench,
    )
    from multiagent.bench.bp_figures import beats_others
    from multiagent.bench.bp_render import render_backpressure
    from multiagent.policies.profiles import BUILTIN_PROFILES

    names = tuple(s.strip() for s in strategies.split(",") if s.strip())
    if profile not in BUILTIN_PROFILES:
        raise UsageError(f"unknown --profile {profile!r}; valid: {', '.join(BUILTIN_PROFILES)}")
    config = BackpressureBenchConfig(
        phase_s=2.0 if quick else phase_seconds,
        loops=loops,
        capacity_rps=capacity,
        strategies=names,
        profile=profile,
    )
    if quick and not no_report and report is None:
        raise UsageError("--quick is a smoke run: add --no-report or --report PATH")
    progress = None if as_json else (lambda line: err_console.print(line, style="dim"))
    figures, runs = run_backpressure_bench(config, progress=progress)
    body = render_backpressure(figures, notes=describe(config))
    written = _write(
        "backpressure",
        "Adaptive backpressure",
        body,
        report=report,
        no_report=no_report,
        ctx=ctx,
    )
    document = {
        "config": {
            "phase_s": config.phase_s,
            "loops": config.loops,
            "capacity_rps": config.capacity_rps,
            "strategies": list(config.strategies),
            "profile": config.profile,
        },
        "phases": [f.as_dict() for f in figures],
        "adaptive_beats": beats_others(figures, "adaptive"),
        "adaptive_blind_beats": beats_others(figures, "adaptive_blind"),
        "controller_trace": {r.strategy: r.controller for r in runs if r.controller},
    }
    _emit(document, body, as_json=as_json, written=written)


@bench_app.command("overhead")
def overhead(
    ctx: typer.Context,
    iterations: Annotated[int, typer.Option(min=5, help="Timed runs of each variant.")] = 40,
    warmup: Annotated[int, typer.Option(min=0, help="Untimed runs of each variant first.")] = 5,
    report: ReportOption = None,
    no_report: NoReportOption = False,
    as_json: JsonOption = False,
) -> None:
    """Bare LangGraph orchestration vs the full pipeline on a zero-latency model; target ≤ 1.10×."""
    from multiagent.bench.overhead import run_overhead_bench
    from multiagent.bench.overhead_report import overhead_markdown

    result = run_overhead_bench(iterations=iterations, warmup=warmup)
    body = overhead_markdown(result)
    written = _write(
        "overhead", "Framework overhead", body, report=report, no_report=no_report, ctx=ctx
    )
    _emit(result, body, as_json=as_json, written=written)


@bench_app.command("scale")
def scale(
    ctx: typer.Context,
    linear: Annotated[
        bool, typer.Option("--linear", help="Time and memory per item across batch sizes.")
    ] = False,
    sizes: Annotated[
        str, typer.Option("--sizes", help="Comma-separated batch sizes.")
    ] = "1000,10000",
    workers: Annotated[
        bool,
        typer.Option("--workers", help="Queued batch throughput with 1, 2, 4 worker processes."),
    ] = False,
    items: Annotated[
        int, typer.Option("--items", min=10, help="With --workers: items in each batch.")
    ] = 10_000,
    concurrency: Annotated[
        int,
        typer.Option(
            "--concurrency", min=1, max=64, help="With --workers: calls in flight per worker."
        ),
    ] = 5,
    processes: Annotated[
        bool,
        typer.Option("--processes", help="N processes sharing one simulator limit, per strategy."),
    ] = False,
    redis_overhead: Annotated[
        bool, typer.Option("--redis-overhead", help="Per-call cost of the Redis path.")
    ] = False,
    process_count: Annotated[
        int, typer.Option("--process-count", min=1, max=16, help="Worker processes.")
    ] = 4,
    loops: Annotated[
        int, typer.Option("--loops", min=1, max=128, help="Agent loops per process.")
    ] = 16,
    phase_seconds: Annotated[
        float, typer.Option("--phase-seconds", min=1.0, help="Length of each of the five phases.")
    ] = 15.0,
    capacity: Annotated[
        float, typer.Option("--capacity", min=1.0, help="Baseline capacity, requests/s.")
    ] = 20.0,
    strategies: Annotated[
        str,
        typer.Option(
            "--strategies", help="Comma-separated: per_process, litellm, shared_adaptive."
        ),
    ] = "per_process,litellm,shared_adaptive",
    modes: Annotated[
        str, typer.Option("--modes", help="Comma-separated: advertised, blind.")
    ] = "advertised,blind",
    calls: Annotated[
        int, typer.Option("--calls", min=10, help="Timed calls per variant (--redis-overhead).")
    ] = 2000,
    redis_url: Annotated[
        str | None,
        typer.Option(
            "--redis-url",
            help="Redis to use (default: MULTIAGENT_REDIS_URL, else one started on loopback).",
        ),
    ] = None,
    quick: Annotated[
        bool, typer.Option("--quick", help="2-second phases: a smoke run, not a measurement.")
    ] = False,
    report: ReportOption = None,
    no_report: NoReportOption = False,
    as_json: JsonOption = False,
) -> None:
    """Scaling benchmarks: --linear (per-item cost of a batch from 1k to 100k items),
    --processes (N processes sharing one limit), --redis-overhead (cost of the Redis path),
    --workers (queued batch throughput with 1, 2 and 4 worker processes)."""
    from multiagent.bench.scale_linear import render_linear, run_linear_bench

    chosen = sum((linear, processes, redis_overhead, workers))
    if chosen != 1:
        raise UsageError(
            "choose one thing to measure: --linear, --processes, --redis-overhead or --workers"
        )
    if quick and not no_report and report is None:
        raise UsageError("--quick is a smoke run: add --no-report or --report PATH")
    if workers:
        _scale_workers(ctx, items=items, concurrency=concurrency, report=report,
                       no_report=no_report, as_json=as_json)  # fmt: skip
        return
    if processes:
        _scale_processes(
            phase_s=2.0 if quick else phase_seconds,
            processes=process_count,
            loops=loops,
            capacity=capacity,
            strategies=strategies,
            modes=modes,
            redis_url=redis_url,
            report=report,
            no_report=no_report,
            as_json=as_json,
            ctx=ctx,
        )
        return
    if redis_overhead:
        _scale_redis_overhead(
            calls=200 if quick else calls,
            redis_url=redis_url,
            report=report,
            no_report=no_report,
            as_json=as_json,
            ctx=ctx,
        )
        return
    try:
        counts = tuple(int(part) for part in sizes.split(",") if part.strip())
    except ValueError:
        raise UsageError(f"--sizes must be comma-separated integers, got {sizes!r}") from None
    if len(counts) < 2 or min(counts) < 10:
        raise UsageError(f"--sizes needs at least two sizes of 10 or more, got {sizes!r}")
    result = run_linear_bench(sizes=counts)
    body = render_linear(result)
    written = _write(
        "scale-linear", "Linear batches", body, report=report, no_report=no_report, ctx=ctx
    )
    _emit(result.as_dict(), body, as_json=as_json, written=written)


def _scale_workers(
    ctx: typer.Context,
    *,
    items: int,
    concurrency: int,
    report: Path | None,
    no_report: bool,
    as_json: bool,
) -> None:
    from multiagent.bench.scale_workers import render_workers, run_workers_bench

    progress = None if as_json else (lambda line: err_console.print(line, style="dim"))
    result = run_workers_bench(items=items, concurrency=concurrency, progress=progress)
    body = render_workers(result)
    written = _write(
        "scale-workers", "Distributed batch: worker processes", body, report=report,
        no_report=no_report, ctx=ctx,
    )  # fmt: skip
    _emit(result.as_dict(), body, as_json=as_json, written=written)


def _names(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


def _redis_url(given: str | None) -> str | None:
    from multiagent.policies import load_settings

    return given or load_settings().redis_url


def _scale_processes(
    *,
    phase_s: float,
    processes: int,
    loops: int,
    capacity: float,
    strategies: str,
    modes: str,
    redis_url: str | None,
    report: Path | None,
    no_report: bool,
    as_json: bool,
    ctx: typer.Context,
) -> None:
    """``bench scale --processes``: run, render, write, print."""
    from multiagent.bench.scale_processes import ScaleProcessesConfig, run_scale_processes
    from multiagent.bench.scale_redis import bench_redis
    from multiagent.bench.scale_render import describe, processes_document, render_processes

    config = ScaleProcessesConfig(
        phase_s=phase_s,
        processes=processes,
        loops=loops,
        capacity_rps=capacity,
        strategies=_names(strategies),
        modes=_names(modes),
    )
    progress = None if as_json else (lambda line: err_console.print(line, style="dim"))
    with bench_redis(_redis_url(redis_url)) as url:
        figures, runs = run_scale_processes(config, redis_url=url, progress=progress)
    body = render_processes(figures, runs, config, notes=describe(config))
    written = _write(
        "scale-processes",
        "Processes sharing one limit",
        body,
        report=report,
        no_report=no_report,
        ctx=ctx,
    )
    _emit(processes_document(figures, runs, config), body, as_json=as_json, written=written)


def _scale_redis_overhead(
    *,
    calls: int,
    redis_url: str | None,
    report: Path | None,
    no_report: bool,
    as_json: bool,
    ctx: typer.Context,
) -> None:
    """``bench scale --redis-overhead``: time, render, write, print."""
    from multiagent.bench.scale_overhead import (
        overhead_document,
        render_overhead,
        run_redis_overhead,
    )
    from multiagent.bench.scale_redis import bench_redis

    with bench_redis(_redis_url(redis_url)) as url:
        figures, missing = run_redis_overhead(redis_url=url, calls=calls)
    body = render_overhead(figures, missing)
    written = _write(
        "scale-redis-overhead",
        "Redis path overhead",
        body,
        report=report,
        no_report=no_report,
        ctx=ctx,
    )
    _emit(overhead_document(figures, missing), body, as_json=as_json, written=written)


@bench_app.command("startup")
def startup(
    ctx: typer.Context,
    repeat: Annotated[int, typer.Option(min=1, max=50, help="Timed runs of each variant.")] = 5,
    no_reference: Annotated[
        bool,
        typer.Option("--no-reference", help="Skip timing the sentence-transformers load."),
    ] = False,
    report: ReportOption = None,
    no_report: NoReportOption = False,
    as_json: JsonOption = False,
) -> None:
    """`multiagent run` in new processes, memory on vs off; target ≤ 2 s with memory on."""
    from multiagent.bench.startup import run_startup_bench
    from multiagent.bench.startup_report import startup_markdown

    progress = None if as_json else (lambda line: err_console.print(line, style="dim"))
    result = run_startup_bench(repeat=repeat, reference=not no_reference, progress=progress)
    body = startup_markdown(result)
    written = _write("startup", "Start-up", body, report=report, no_report=no_report, ctx=ctx)
    _emit(result, body, as_json=as_json, written=written)
