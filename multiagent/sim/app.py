"""The OpenAI-compatible simulator as a FastAPI app.

Routes: ``POST /v1/chat/completions`` (plain and ``stream: true`` server-sent events),
``GET /v1/models`` and ``GET /v1/models/{model}``, ``GET /sim/stats``, ``GET /sim/events``
(the opt-in event log), ``POST /sim/reset`` and ``GET /healthz``. A model that
``GET /v1/models`` does not list is refused as OpenAI refuses it, with ``404 model_not_found``,
before the limits see the request.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import asdict
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from multiagent.models._bp_health import PROCESSING_HEADER
from multiagent.sim._asgi import RequestIdHeader, StampArrival
from multiagent.sim._request_checks import check_request
from multiagent.sim.config import SimServerConfig
from multiagent.sim.protocol import (
    ChatRequest,
    Reply,
    chunk_body,
    completion_body,
    completion_id,
    compose_reply,
    error_body,
)
from multiagent.sim.state import REQUEST_ID_HEADER, Admitted, Refused, SimState

#: The OpenAPI entry of the routes that name a model, for one the simulator does not list.
_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"description": "The model is not one of GET /v1/models (code model_not_found)"}
}


def create_sim_app(config: SimServerConfig) -> FastAPI:
    """Build the simulator app; its schedule clock starts now (and on ``POST /sim/reset``).

    Args:
        config: Limits, latency, faults and schedule to serve.
    """
    state = SimState(config)
    app = FastAPI(
        title="multiagent simulator",
        description="An OpenAI-compatible chat-completions server with limits and faults.",
    )
    app.state.sim = state
    app.add_middleware(RequestIdHeader)
    app.add_middleware(StampArrival)  # added last: outermost, so first to see a request

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        message, param = _validation_message(exc.errors())
        return _invalid_request(message, param=param)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # OpenAI's shape for an unknown URL or method too, so every client parses one format
        if exc.status_code == 404:
            message = f"Invalid URL ({request.method} {request.url.path})"
        else:
            message = f"{exc.detail} ({request.method} {request.url.path})"
        body = error_body(message, kind="invalid_request_error", code=None)
        return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def server_error(request: Request, exc: Exception) -> JSONResponse:
        # the server log keeps the traceback; the client gets OpenAI's error document
        message = "The simulator failed while processing the request (see its log)"
        return JSONResponse(error_body(message, kind="server_error", code=None), status_code=500)

    @app.post("/v1/chat/completions", response_model=None, responses=_NOT_FOUND)
    async def chat_completions(body: ChatRequest, request: Request) -> Response:
        # the configured latency runs from the request's arrival: parsing and composing the
        # answer are part of it, not added to it (a busy simulator would otherwise serve slower
        # than it says, and every client's figures would read the difference as their own)
        arrived: float = request.state.arrived
        check_request(body)
        if body.model not in config.models:
            # refused before admission, as a malformed request is: no capacity taken, not counted
            return _model_not_found(body.model)
        try:
            reply = compose_reply(body, default_seed=config.seed)
        except (AttributeError, KeyError, TypeError, ValueError, IndexError) as exc:
            # a value deep in a tool's or format's JSON schema that the simulator cannot use
            return _invalid_request(f"Invalid request: the simulator cannot use it ({exc!r})")
        # as OpenAI counts a request against its token limit: the prompt, and every choice's cap
        limit = body.output_limit or config.default_max_tokens
        decision = state.admit(
            cost_tokens=reply.prompt_tokens + len(reply.answers) * limit,
            pieces=reply.steps,
            request_id=request.headers.get(REQUEST_ID_HEADER),
        )
        if isinstance(decision, Refused):
            return _error_response(decision)
        if body.stream:
            include = bool(body.stream_options and body.stream_options.include_usage)
            events = _events(state, decision, reply, include_usage=include, begin=arrived)
            headers = {**decision.headers, "cache-control": "no-cache"}
            return StreamingResponse(events, media_type="text/event-stream", headers=headers)
        completed = False
        loop = asyncio.get_running_loop()
        try:
            delay = decision.ttft_s + max(1, reply.steps) * decision.token_latency_s
            if (wait := arrived + delay - loop.time()) > 0:
                await asyncio.sleep(wait)
            completed = True
        except asyncio.CancelledError:
            # uvicorn cancels what still runs when its graceful shutdown ends, and then answered
            # with a plain-text 500: say it in OpenAI's shape, as a server going away (503)
            message = "The simulator is shutting down; the request was not completed."
            body = error_body(message, kind="server_error", code=None)
            return JSONResponse(body, status_code=503, headers={"connection": "close"})
        finally:
            _finish(state, decision, reply, completed=completed)
        # how long the server took, as OpenAI's API says it (clients judge latency on it)
        served_ms = str(round((loop.time() - arrived) * 1000))
        return JSONResponse(
            completion_body(reply, response_id=completion_id()),
            headers={**decision.headers, PROCESSING_HEADER: served_ms},
        )

    @app.get("/v1/models")
    async def list_models() -> dict[str, Any]:
        return {"object": "list", "data": [_model(name) for name in config.models]}

    @app.get("/v1/models/{model:path}", response_model=None, responses=_NOT_FOUND)
    async def retrieve_model(model: str) -> dict[str, Any] | JSONResponse:
        # the SDK's models.retrieve, which some clients call to check a model before using it
        if model in config.models:
            return _model(model)
        return _model_not_found(model)

    @app.get("/sim/stats")
    async def stats() -> dict[str, Any]:
        # the server process's CPU (user + system) so far: what serving cost on a shared machine
        return {**state.snapshot(), "process_cpu_s": round(time.process_time(), 4)}

    @app.get("/sim/events")
    async def events() -> dict[str, Any]:
        # Retry-Afters handed out and early arrivals, by request id (``event_log`` on)
        return {"recording": config.event_log, "events": [asdict(e) for e in state.events()]}

    @app.post("/sim/reset")
    async def reset() -> dict[str, Any]:
        state.reset()
        return {"reset": True, "phases": [phase.name for phase in state.phases]}

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.head("/healthz", include_in_schema=False)  # load balancers probe with HEAD
    async def healthz_head() -> Response:
        return Response(status_code=200)

    default_openapi = app.openapi
    app.openapi = lambda: _openapi_with_400(default_openapi)  # type: ignore[method-assign]
    return app


def _model(name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": 0, "owned_by": "multiagent-sim"}


def _model_not_found(model: str) -> JSONResponse:
    """OpenAI's 404 for a model it does not serve, on every route that takes one."""
    message = f"The model `{model}` does not exist or you do not have access to it."
    body = error_body(message, kind="invalid_request_error", code="model_not_found")
    return JSONResponse(body, status_code=404)


def _invalid_request(message: str, *, param: str | None = None) -> JSONResponse:
    body = error_body(message, kind="invalid_request_error", code="invalid_value", param=param)
    return JSONResponse(body, status_code=400)


def _validation_message(errors: Sequence[Any]) -> tuple[str, str | None]:
    """One line for the first problem (where it is and what is wrong), and its parameter."""
    first = errors[0] if errors else {"loc": (), "msg": "invalid body", "type": ""}
    if first.get("type") == "json_invalid":
        return "Invalid request: the body is not valid JSON; send one JSON object", None
    param = ".".join(str(part) for part in first["loc"][1:]) or None
    if param is None and first.get("type") == "missing":
        return "Invalid request: the body is empty; send one JSON object", None
    return f"Invalid request: {param or 'body'}: {first['msg']}", param


def _openapi_with_400(default: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """FastAPI's document, with the 400 this app answers in place of FastAPI's default 422."""
    schema = default()  # FastAPI builds it once and keeps it
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            responses = operation.get("responses", {})
            if responses.pop("422", None) is not None:
                responses["400"] = {
                    "description": "Invalid request: an OpenAI error document "
                    '({"error": {"message", "type", "param", "code"}})'
                }
    return schema


def _finish(state: SimState, admitted: Admitted, reply: Reply, *, completed: bool) -> None:
    state.finish(
        admitted,
        completed=completed,
        prompt_tokens=reply.prompt_tokens,
        completion_tokens=reply.completion_tokens,
    )


def _error_response(refused: Refused) -> JSONResponse:
    if refused.status == 429:
        kind = "tokens" if refused.limit == "tokens" else "requests"
        body = error_body(refused.message, kind=kind, code="rate_limit_exceeded")
    else:
        body = error_body(refused.message, kind="server_error", code=None)
    return JSONResponse(body, status_code=refused.status, headers=refused.headers)


def _one_token(logprobs: dict[str, Any] | None, number: int) -> dict[str, Any] | None:
    """The ``logprobs`` of a stream chunk: token ``number`` (from 1) of the choice's."""
    if logprobs is None:
        return None
    return {**logprobs, "content": logprobs["content"][number - 1 : number]}


def _sse(document: Any) -> str:
    return f"data: {json.dumps(document, separators=(',', ':'))}\n\n"


async def _events(
    state: SimState, admitted: Admitted, reply: Reply, *, include_usage: bool, begin: float
) -> AsyncIterator[str]:
    """Server-sent chunks paced at time-to-first-token after ``begin`` (the request's arrival,
    event-loop clock), then one piece of every choice per token latency."""
    loop = asyncio.get_running_loop()
    response_id = completion_id()
    completed = False

    def chunk(index: int, delta: dict[str, Any] | None, **extra: Any) -> str:
        return _sse(
            chunk_body(
                reply,
                response_id=response_id,
                index=index,
                delta=delta,
                include_usage=include_usage,
                **extra,
            )
        )

    try:
        if (wait := begin + admitted.ttft_s - loop.time()) > 0:
            await asyncio.sleep(wait)
        for index, answer in enumerate(reply.answers):
            first: dict[str, Any] = {"role": "assistant", "content": "", "refusal": None}
            if answer.tool_call is not None:
                call_id, name, _ = answer.tool_call
                function = {"name": name, "arguments": ""}
                first["content"] = None
                first["tool_calls"] = [
                    {"index": 0, "id": call_id, "type": "function", "function": function}
                ]
            yield chunk(index, first)
        pieces = [answer.pieces for answer in reply.answers]
        logprobs = [reply.logprobs(index) for index in range(len(reply.answers))]
        for number in range(1, reply.steps + 1):
            due = begin + admitted.ttft_s + number * admitted.token_latency_s
            if (wait := due - loop.time()) > 0:
                await asyncio.sleep(wait)
            for index, answer in enumerate(reply.answers):
                if number > len(pieces[index]):
                    continue
                piece = pieces[index][number - 1]
                if answer.tool_call is not None:
                    yield chunk(
                        index, {"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}
                    )
                else:
                    yield chunk(
                        index, {"content": piece}, logprobs=_one_token(logprobs[index], number)
                    )
        for index, answer in enumerate(reply.answers):
            yield chunk(index, {}, finish_reason=answer.finish_reason)
        if include_usage:
            yield chunk(0, None, usage=True)
        yield "data: [DONE]\n\n"
        completed = True
    finally:
        _finish(state, admitted, reply, completed=completed)
