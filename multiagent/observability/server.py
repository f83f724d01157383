"""The metrics HTTP server (FastAPI): Prometheus scrape, JSON summary, history, cache analytics.

Routes:

- ``GET /healthz``: home writable, databases open, scheduler heartbeat
  (:mod:`multiagent.observability.health`); 503 with the failing check when one fails.
- ``GET /metrics``: Prometheus text. Counters are the history's all-time totals plus what this
  process counted and has not persisted yet (each count once); gauges are this process's live
  collectors (backpressure limiters) and the caches' entries and size.
- ``GET /metrics/summary``: calls, tokens, cost, errors by kind, average latency, cache hit
  rates, per model and per agent (:func:`multiagent.observability.summary.summarize`).
- ``GET /metrics/history?hours=N``: N from 1 to 24 (else 422), 5-minute points, oldest first.
- ``GET /metrics/cache``: :func:`multiagent.observability.cache_stats.cache_analytics`.
- ``GET /openapi.json``: FastAPI's OpenAPI document.

Every ``GET`` answers ``HEAD`` too (uptime checks use it; HTTP requires it). A database of the
home that cannot be read (damaged, truncated, locked) is a 503 whose ``detail`` names the file
and how to recover, never a 500: the server keeps serving what it still can. So is a store
that cannot be opened at all (a PostgreSQL checkpointer that is down). A home the server may
only read (a dashboard sidecar given the data directory read-only) is read as it is, creating
and changing nothing there; only ``/healthz`` fails, on its home check.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Query, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from multiagent._metrics import MetricsStore, get_metrics
from multiagent._serve import serve_in_thread
from multiagent.errors import MultiagentError
from multiagent.observability.cache_stats import cache_analytics, cache_gauges
from multiagent.observability.exposition import CONTENT_TYPE, render_prometheus
from multiagent.observability.health import health
from multiagent.observability.history import MAX_HOURS, MetricsHistory
from multiagent.observability.summary import summarize
from multiagent.persistence.health import damaged_store_error
from multiagent.policies import Settings

DEFAULT_PORT = 9464  # the port OpenTelemetry's Prometheus exporter uses by convention
_BUSY = ("locked", "busy", "unable to open", "readonly", "disk i/o")


def store_problem(settings: Settings, exc: sqlite3.DatabaseError) -> str:
    """One line for a database of the home that cannot be read: the file and how to recover."""
    detail = str(exc)
    if isinstance(exc, sqlite3.OperationalError) and any(b in detail for b in _BUSY):
        return f"a database in {settings.home} is unusable now: {detail}"
    return str(damaged_store_error(Path(settings.home), detail=detail))


class _HeadAsGet:
    """Answer ``HEAD`` as the ``GET`` of the same path without its body (FastAPI routes only
    take the methods they declare); a stream ends after its headers."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return
        ended = False

        async def headers_only(message: Message) -> None:
            nonlocal ended
            if message["type"] == "http.response.start":
                await send(message)
            elif message["type"] == "http.response.body" and not ended:
                ended = True
                await send({"type": "http.response.body", "body": b"", "more_body": False})

        await self.app({**scope, "method": "GET"}, receive, headers_only)


def metrics_summary(settings: Settings, *, store: MetricsStore | None = None) -> dict[str, Any]:
    """The summary of every persisted run plus this process's unpersisted counts.

    Args:
        settings: Resolved settings (the data directory).
        store: This process's metrics store; default: :func:`get_metrics`.

    Returns:
        :func:`~multiagent.observability.summary.summarize` of the totals, with ``source``
        naming the history file and its last write.
    """
    history = MetricsHistory(settings, store=store)
    return {
        **summarize(history.totals()),
        "source": {
            "history": str(history.path),
            "last_persist": history.last_persist(),
            "stored_buckets": history.stored_buckets(),
        },
    }


def prometheus_text(settings: Settings, *, store: MetricsStore | None = None) -> str:
    """The Prometheus text of ``GET /metrics``: the history's all-time counter totals plus this
    process's unpersisted counts, this process's gauges and the caches'.

    Args:
        settings: Resolved settings (the data directory, the caches).
        store: This process's metrics store; default: :func:`get_metrics`.
    """
    live = store if store is not None else get_metrics()
    gauges = [*live.snapshot().gauges, *cache_gauges(cache_analytics(settings))]
    return render_prometheus(MetricsHistory(settings, store=live).totals(), gauges)


def create_metrics_app(
    settings: Settings,
    *,
    store: MetricsStore | None = None,
    token: str | None = None,
    public: bool = False,
) -> FastAPI:
    """Build the metrics app (and the dashboard at ``/``) for a data directory.

    Args:
        settings: Resolved settings (data directory, cache configuration).
        store: This process's metrics store; default: :func:`get_metrics`.
        token: ``MULTIAGENT_METRICS_TOKEN``: actions need it always, reads when ``public``.
        public: The server listens on a non-loopback address.
    """
    from multiagent.dashboard.app import mount_dashboard
    from multiagent.dashboard.security import Guard

    live = store if store is not None else get_metrics()
    history = MetricsHistory(settings, store=live)
    guard = Guard(token=token, public=public)
    app = FastAPI(
        title="multiagent metrics",
        description="Model calls, tokens, cost, errors, latency and caches of multiagent runs.",
    )
    app.add_middleware(_HeadAsGet)
    app.state.stopping = threading.Event()  # set as the server stops: open streams end
    mount_dashboard(app, settings, guard=guard, stopping=app.state.stopping)
    read = [Depends(guard.read)]  # off loopback every read needs the token

    @app.exception_handler(sqlite3.DatabaseError)
    def unreadable_store(request: Request, exc: sqlite3.DatabaseError) -> JSONResponse:
        return JSONResponse({"detail": store_problem(settings, exc)}, status_code=503)

    @app.exception_handler(MultiagentError)
    def unusable_store(request: Request, exc: MultiagentError) -> JSONResponse:
        # a store a read needs cannot be opened (PostgreSQL down): its line
        return JSONResponse({"detail": str(exc)}, status_code=503)

    @app.get("/healthz", dependencies=read, responses={503: {"description": "A check failed."}})
    def healthz() -> JSONResponse:
        report = {**health(settings), "pid": os.getpid()}
        return JSONResponse(report, status_code=200 if report["status"] == "ok" else 503)

    @app.get("/metrics", dependencies=read, response_class=PlainTextResponse)
    def prometheus() -> PlainTextResponse:
        text = prometheus_text(settings, store=live)
        return PlainTextResponse(text, media_type=CONTENT_TYPE)

    @app.get("/metrics/summary", dependencies=read)
    def summary() -> dict[str, Any]:
        return metrics_summary(settings, store=live)

    @app.get("/metrics/history", dependencies=read)
    def history_points(
        hours: Annotated[
            int, Query(ge=1, le=MAX_HOURS, description="Hours of history, 1 to 24.")
        ] = 1,
    ) -> dict[str, Any]:
        points = history.points(hours=hours)
        return {"hours": hours, "bucket_seconds": 300, "count": len(points), "points": points}

    @app.get("/metrics/cache", dependencies=read)
    def caches() -> dict[str, Any]:
        return cache_analytics(settings)

    return app


@contextmanager
def run_metrics_server(
    settings: Settings,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    store: MetricsStore | None = None,
    token: str | None = None,
) -> Iterator[str]:
    """Serve the metrics app in a background thread for the duration of a ``with`` block.

    Args:
        settings: Resolved settings (the data directory to report on).
        host: Interface to listen on (loopback by default).
        port: TCP port; 0 picks a free one.
        store: This process's metrics store; default: :func:`get_metrics`.
        token: ``MULTIAGENT_METRICS_TOKEN``; required when ``host`` is not loopback.

    Yields:
        The base URL, e.g. ``"http://127.0.0.1:50123"``.

    Raises:
        UsageError: The host cannot be resolved, the port is taken, or a non-loopback host
            has no token.
        MultiagentError: The server did not start.
    """
    from multiagent.dashboard.security import check_bind, is_loopback

    check_bind(host, token)
    app = create_metrics_app(settings, store=store, token=token, public=not is_loopback(host))
    with serve_in_thread(app, host=host, port=port, what="the metrics server") as url:
        try:
            yield url
        finally:
            app.state.stopping.set()  # before uvicorn waits for open connections to close
