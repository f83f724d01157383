"""Fixtures of the integration tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi import FastAPI, Request, Response

from multiagent._serve import serve_in_thread


@pytest.fixture
def otlp_bodies(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[bytes]]:
    """An OTLP/HTTP receiver on loopback; the CLI's spans are exported to it."""
    bodies: list[bytes] = []
    receiver = FastAPI()

    @receiver.post("/v1/traces")
    async def traces(request: Request) -> Response:
        bodies.append(await request.body())
        return Response(b"", media_type="application/x-protobuf")

    with serve_in_thread(receiver, host="127.0.0.1", port=0, what="otlp") as url:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", url)
        yield bodies
