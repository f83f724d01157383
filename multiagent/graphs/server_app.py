"""LangGraph Server's HTTP app (``langgraph.json``: ``"http": {"app": ...}``): the server
process's metrics reach the history of its ``MULTIAGENT_HOME``, its runs are traced, and its
metrics are served beside the server's own routes.

The server merges this app into its own and runs :data:`app`'s lifespan inside its own, in the
API process and in every queue worker process (``langgraph_api.queue_entrypoint``) alike: the
processes that run graphs. Its start does what ``configure_tracing(settings)`` does for a CLI
command (:func:`~multiagent.observability.tracing.configure_tracing`): the process's metrics
are persisted into ``<home>/metrics.sqlite`` every ``MULTIAGENT_METRICS_EXPORT_S`` seconds
(300), and spans go to ``OTEL_EXPORTER_OTLP_ENDPOINT`` when it is set; a run of our graphs then
adds the OpenTelemetry handler itself (:mod:`multiagent.graphs.redacting`). Its end persists
what was counted since and flushes the spans left: uvicorn answers SIGTERM with a graceful
shutdown (this lifespan's end) and then raises the signal again with its default action, which
ends the process without running ``atexit`` hooks, so the metrics reader's exit export alone
would lose the last counts.

Why not at import of :mod:`multiagent.graphs.studio`: that module is imported wherever the graphs
are wanted (drawing them, a notebook, a test), and tying such a process to a data directory's
history or starting an exporter's thread there would be a side effect nobody asked for. The
lifespan runs only where a server serves.

Routes, under ``/multiagent`` (LangGraph Server owns ``/metrics`` and ``/ok``):

- ``GET /multiagent/metrics``: Prometheus text (as ``multiagent metrics serve``'s ``/metrics``);
- ``GET /multiagent/metrics/summary``: the JSON of ``multiagent metrics show --json``, this
  process's unpersisted counts included.

They are not behind the server's auth handler (LangGraph Server leaves custom routes open unless
``enable_custom_route_auth``). With ``MULTIAGENT_METRICS_TOKEN`` set they need
``Authorization: Bearer <token>``; without it they answer requests naming a loopback host only,
as ``multiagent metrics serve`` does on loopback.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import PlainTextResponse

from multiagent.dashboard.security import TOKEN_ENV, Guard, check_bind
from multiagent.observability.exposition import CONTENT_TYPE
from multiagent.observability.server import metrics_summary, prometheus_text
from multiagent.observability.tracing import configure_tracing, shutdown_tracing
from multiagent.policies import Settings, load_settings

PREFIX = "/multiagent"


def _open(settings: Settings) -> None:
    """Tie the process to ``settings.home``'s history and set its tracing up."""
    configure_tracing(settings)


def _close(settings: Settings) -> None:
    """Write what the process counted since its last persist, and the completion cache's answers
    waiting to be written; flush the spans left (at most a few seconds)."""
    from multiagent.models._cache_writer import flush_write_behind
    from multiagent.observability.history import persist_metrics, unpersisted

    try:
        with suppress(Exception):  # a cache that cannot be written is only a cache
            flush_write_behind()
        if unpersisted():
            persist_metrics(settings)
    finally:
        shutdown_tracing()


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    # settings read files, and the OTLP exporter's set-up imports: both off the event loop
    token = os.environ.get(TOKEN_ENV) or None
    check_bind("127.0.0.1", token)  # a token too short to be one is refused at start
    settings = await asyncio.to_thread(load_settings)
    await asyncio.to_thread(_open, settings)
    app.state.multiagent_settings = settings
    app.state.multiagent_guard = Guard(token=token, public=token is not None)
    try:
        yield
    finally:
        await asyncio.to_thread(_close, settings)


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.multiagent_settings
    return settings


def _read(request: Request) -> None:
    """The token when one is set; else loopback host names only (as ``metrics serve``)."""
    guard: Guard = request.app.state.multiagent_guard
    guard.read(request)


app = FastAPI(
    title="multiagent on LangGraph Server",
    description="Model calls, tokens, cost, errors, latency and caches of this server's runs.",
    lifespan=_lifespan,
)


@app.get(f"{PREFIX}/metrics", dependencies=[Depends(_read)])
def prometheus(request: Request) -> PlainTextResponse:
    """Prometheus text: the history's totals, this process's unpersisted counts and gauges."""
    text = prometheus_text(_settings(request))
    return PlainTextResponse(text, media_type=CONTENT_TYPE)


@app.get(f"{PREFIX}/metrics/summary", dependencies=[Depends(_read)])
def summary(request: Request) -> dict[str, Any]:
    """Calls, tokens, cost, errors, latency and caches: ``multiagent metrics show --json``."""
    return metrics_summary(_settings(request))
