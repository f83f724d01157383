"""Pure ASGI middleware of the simulator app: below FastAPI, so they see every request.

:class:`StampArrival` notes when a request arrived, before its body is read (the simulated
latency runs from there); :class:`RequestIdHeader` gives every response its ``x-request-id``.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from multiagent.sim.state import REQUEST_ID_HEADER


class RequestIdHeader:
    """Pure ASGI middleware giving every response OpenAI's ``x-request-id``: the client's own
    when it sent one (as vLLM echoes it), else a fresh ``req_...`` (the SDK's ``_request_id``
    and its errors' ``request_id`` read it)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        name = REQUEST_ID_HEADER.encode()
        given = next((v for k, v in scope["headers"] if k.lower() == name), None)
        request_id = given or f"req_{uuid.uuid4().hex}".encode()

        async def send_with_id(message: Any) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (name, request_id)]
            await send(message)

        await self.app(scope, receive, send_with_id)


class StampArrival:
    """Pure ASGI middleware stamping each request's arrival on ``request.state.arrived``
    (event-loop clock), before the body is read and parsed."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            scope.setdefault("state", {})["arrived"] = asyncio.get_running_loop().time()
        await self.app(scope, receive, send)


__all__ = ["RequestIdHeader", "StampArrival"]
