"""The dashboard's routes: the page at ``/``, its static files, JSON reads, actions and a stream.

- ``GET /``: the page (overview, live runs, threads, backpressure); ``/static/...``: its
  JavaScript, CSS and the vendored uPlot.
- ``GET /api/overview?hours=N``, ``/api/runs``, ``/api/threads``,
  ``/api/threads/{id}?checkpoint_id=...`` (time travel), ``/api/backpressure?minutes=N``.
- ``GET /api/stream``: server-sent events, a ``live`` event (runs and limiters) every
  :data:`PUSH_S` seconds while something changed, and a comment line as a keep-alive; a
  ``problem`` event (``{"detail": ...}``) while the live file cannot be read. The stream ends
  when the server stops, so a stop never waits for, or cancels, an open page.
- ``POST /api/threads/{id}/{resume|approve|reject}``: continue a thread (token required).
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
from collections.abc import AsyncIterator
from importlib import resources
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, FastAPI, HTTPException, Query
from fastapi.responses import HTMLResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field

from multiagent.dashboard.actions import start_action
from multiagent.dashboard.data import (
    UnknownThread,
    backpressure,
    live_runs,
    overview,
    thread_detail,
    threads,
)
from multiagent.dashboard.security import Guard
from multiagent.errors import UsageError
from multiagent.observability.history import MAX_HOURS
from multiagent.observability.server import store_problem
from multiagent.policies import Settings

PUSH_S = 0.5
_STATIC = resources.files("multiagent.dashboard") / "static"
_CSP = (
    # uPlot sizes its elements through style attributes: inline styles, never inline scripts
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
    "form-action 'none'"
)


class ActionBody(BaseModel):
    """An optional note for the agents (approve)."""

    feedback: str = Field(default="", max_length=2000)


def _live(settings: Settings) -> dict[str, Any]:
    return {"runs": live_runs(settings), "backpressure": backpressure(settings, minutes=5)}


def _live_event(settings: Settings) -> str:
    """The next event: ``live`` with its data, or ``problem`` naming a file that cannot be read."""
    try:
        return f"event: live\ndata: {json.dumps(_live(settings), default=str)}\n\n"
    except sqlite3.DatabaseError as exc:
        return f"event: problem\ndata: {json.dumps({'detail': store_problem(settings, exc)})}\n\n"


async def _events(settings: Settings, stopping: threading.Event) -> AsyncIterator[str]:
    last = ""
    quiet = 0
    while not stopping.is_set():
        event = await asyncio.to_thread(_live_event, settings)
        if event != last:
            last, quiet = event, 0
            yield event
        else:
            quiet += 1
            if quiet * PUSH_S >= 15:  # keep proxies from closing an idle stream
                quiet = 0
                yield ": keep-alive\n\n"
        await asyncio.sleep(PUSH_S)


def mount_dashboard(
    app: FastAPI, settings: Settings, *, guard: Guard, stopping: threading.Event | None = None
) -> None:
    """Add the dashboard to ``app``.

    Args:
        app: The metrics app.
        settings: Resolved settings (the data directory to show).
        guard: Who may read and act (see :mod:`multiagent.dashboard.security`).
        stopping: Set when the server stops: open streams end (default: never set).
    """
    stopping = stopping if stopping is not None else threading.Event()
    read = [Depends(guard.read)]
    api = APIRouter(prefix="/api", dependencies=read)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> HTMLResponse:
        html = (_STATIC / "index.html").read_text(encoding="utf-8")
        return HTMLResponse(html, headers={"Content-Security-Policy": _CSP,
                                           "X-Content-Type-Options": "nosniff"})  # fmt: skip

    @api.get("/overview")
    def overview_data(
        hours: Annotated[int, Query(ge=1, le=MAX_HOURS, description="Hours, 1 to 24.")] = 24,
    ) -> dict[str, Any]:
        return overview(settings, hours=hours)

    @api.get("/runs")
    def runs_data() -> dict[str, Any]:
        return live_runs(settings)

    @api.get("/backpressure")
    def backpressure_data(
        minutes: Annotated[int, Query(ge=1, le=1440, description="Minutes of samples.")] = 15,
    ) -> dict[str, Any]:
        return backpressure(settings, minutes=minutes)

    @api.get("/threads")
    def threads_data() -> dict[str, Any]:
        return {"threads": threads(settings)}

    @api.get("/threads/{thread_id}", responses={404: {"description": "Unknown thread."}})
    def thread_data(
        thread_id: str,
        checkpoint_id: Annotated[str | None, Query(max_length=200)] = None,
    ) -> dict[str, Any]:
        try:
            return thread_detail(settings, thread_id, checkpoint_id)
        except UnknownThread as exc:
            raise HTTPException(status_code=404, detail=str(exc)) from None

    @api.get("/stream", response_class=StreamingResponse)
    def stream() -> StreamingResponse:
        return StreamingResponse(
            _events(settings, stopping),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    @api.post(
        "/threads/{thread_id}/{action}",
        status_code=202,
        dependencies=[Depends(guard.act)],
        responses={409: {"description": "The thread cannot take this action now."}},
    )
    def act(
        thread_id: str,
        action: Literal["resume", "approve", "reject"],
        body: Annotated[ActionBody | None, Body()] = None,
    ) -> dict[str, Any]:
        try:
            return start_action(
                settings,
                thread_id=thread_id,
                action=action,
                feedback=(body.feedback if body is not None else ""),
            )
        except UsageError as exc:
            raise HTTPException(status_code=409, detail=str(exc)) from None

    app.include_router(api)
    app.mount("/static", StaticFiles(directory=str(_STATIC)), name="static")
