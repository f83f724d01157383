"""``multiagent sim serve|stats|reset``: the OpenAI-compatible simulated provider."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer
from rich.table import Table

from multiagent._serve import wait_until_stopped
from multiagent.commands._shared import console, print_json
from multiagent.errors import MultiagentError, UsageError
from multiagent.sim.config import DEFAULT_MODELS, build_sim_config
from multiagent.sim.schedule import load_schedule

DEFAULT_URL = "http://127.0.0.1:8089"
_FLAGS = {
    "rpm": "--rpm",
    "tpm": "--tpm",
    "max_concurrency": "--max-concurrency",
    "ttft_s": "--ttft-ms",
    "token_latency_s": "--token-latency-ms",
    "error_rate": "--error-rate",
    "spike_rate": "--spike-rate",
    "spike_s": "--spike-ms",
    "seed": "--seed",
    "models": "--model",
}

sim_app = typer.Typer(
    help="The OpenAI-compatible simulated provider (limits, latency, faults, schedules).",
    no_args_is_help=True,
)


def _ms(value: float) -> float:
    return value / 1000.0


@sim_app.command("serve")
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="TCP port; 0 picks one.")] = 8089,
    rpm: Annotated[float, typer.Option("--rpm", help="Requests per minute.")] = 600.0,
    tpm: Annotated[float, typer.Option("--tpm", help="Tokens per minute.")] = 1_000_000.0,
    max_concurrency: Annotated[
        int, typer.Option("--max-concurrency", min=1, help="Requests in flight at once.")
    ] = 64,
    ttft_ms: Annotated[float, typer.Option("--ttft-ms", min=0, help="Time to first token.")] = 0.0,
    token_latency_ms: Annotated[
        float, typer.Option("--token-latency-ms", min=0, help="Latency per output token.")
    ] = 0.0,
    error_rate: Annotated[
        float,
        typer.Option("--error-rate", min=0, max=1, help="Share of requests failed with 500/503."),
    ] = 0.0,
    spike_rate: Annotated[
        float,
        typer.Option("--spike-rate", min=0, max=1, help="Share of requests given a latency spike."),
    ] = 0.0,
    spike_ms: Annotated[
        float,
        typer.Option("--spike-ms", min=0, help="Latency a spike adds before the first token."),
    ] = 1000.0,
    schedule: Annotated[
        str | None, typer.Option("--schedule", help="Capacity schedule file (.json or .toml).")
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of replies and fault draws.")] = 0,
    model: Annotated[
        list[str] | None,
        typer.Option(
            "--model",
            help="A model name to serve (repeat for several); others get a 404 "
            f"model_not_found. Default: {', '.join(DEFAULT_MODELS)}.",
        ),
    ] = None,
    no_limit_headers: Annotated[
        bool,
        typer.Option(
            "--no-limit-headers",
            help="Advertise no x-ratelimit-* headers (as vLLM, Ollama, llama.cpp); 429s keep "
            "their Retry-After.",
        ),
    ] = False,
) -> None:
    """Serve OpenAI's chat-completions API on HOST:PORT until interrupted."""
    from multiagent.sim.runner import run_sim_server  # the server stack loads only when serving

    config = build_sim_config(
        flag_names=_FLAGS,
        rpm=rpm,
        tpm=tpm,
        max_concurrency=max_concurrency,
        ttft_s=_ms(ttft_ms),
        token_latency_s=_ms(token_latency_ms),
        error_rate=error_rate,
        spike_rate=spike_rate,
        spike_s=_ms(spike_ms),
        seed=seed,
        limit_headers=not no_limit_headers,
        models=tuple(model) if model else DEFAULT_MODELS,
        schedule=load_schedule(schedule) if schedule else (),
    )
    with run_sim_server(config, host=host, port=port) as url:
        phases = ", ".join(
            f"{p.name} ({p.rpm:.0f} rpm, {p.tpm:.0f} tpm)" for p in config.resolved_phases()
        )
        sys.stdout.write(f"multiagent sim listening on {url}\n")
        sys.stdout.write(f"phases: {phases}; stats at {url[: -len('/v1')]}/sim/stats\n")
        sys.stdout.flush()
        wait_until_stopped()


def _root(url: str) -> str:
    """The simulator's root address from ``--url``; a value that is no HTTP address is bad input."""
    _check_url(url)
    root = url.rstrip("/")
    return root[: -len("/v1")] if root.endswith("/v1") else root


def _check_url(url: str) -> None:
    """Raise ``UsageError`` (one line, exit 2) for a ``--url`` that is no http(s) address."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - a port that is not a number raises here
    except ValueError as exc:
        raise UsageError(f"malformed --url {url!r}: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(
            f"malformed --url {url!r}: give the simulator's address, such as {DEFAULT_URL}"
        )


def _call(method: str, url: str) -> Any:
    import httpx2  # only `sim stats|reset` call out; other commands do not load an HTTP client

    try:
        response = httpx2.request(method, url, timeout=10.0)
        response.raise_for_status()
        return response.json()
    except httpx2.HTTPError as exc:
        raise MultiagentError(f"cannot reach the simulator at {url}: {exc}") from None


@sim_app.command("stats")
def stats(
    url: Annotated[str, typer.Option(help="The simulator's address (with or without /v1).")] = (
        DEFAULT_URL
    ),
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
) -> None:
    """Show what a running simulator saw, in total and per phase."""
    report = _call("GET", f"{_root(url)}/sim/stats")
    if as_json:
        print_json(report)
        return
    table = Table(
        title=f"simulator at {_root(url)} · phase {report['current_phase']}",
        title_justify="left",
    )
    for column in ("phase", "state", "req/s cap", "attempts", "ok", "429", "5xx", "early"):
        table.add_column(column, justify="left" if column in ("phase", "state") else "right")
    table.add_column("tokens", justify="right")
    table.add_column("goodput", justify="right")
    for phase in report["phases"]:
        counts, capacity = phase["counts"], phase["capacity"]
        share = phase["goodput_share"]
        table.add_row(
            phase["name"],
            phase["state"],
            f"{capacity['requests_per_s']:g}",
            *(
                str(counts[key])
                for key in ("attempts", "successes", "rate_limited", "server_errors", "early")
            ),
            str(counts["tokens_served"]),
            "-" if share is None else f"{share:.0%}",
        )
    totals = report["totals"]
    console.print(table)
    console.print(
        f"total: {totals['attempts']} attempts, {totals['successes']} ok, "
        f"{totals['rate_limited']} × 429, {totals['server_errors']} × 5xx, "
        f"{totals['early']} early, {totals['aborted']} aborted"
    )


@sim_app.command("reset")
def reset(
    url: Annotated[str, typer.Option(help="The simulator's address (with or without /v1).")] = (
        DEFAULT_URL
    ),
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
) -> None:
    """Clear a running simulator's statistics and restart its schedule."""
    report = _call("POST", f"{_root(url)}/sim/reset")
    if as_json:
        print_json(report)
    else:
        console.print(f"reset; schedule restarted with phases: {', '.join(report['phases'])}")
