"""A recording reverse proxy on 127.0.0.1: what the real server answered, usage included.

The framework's ledger must count what the server reported; this proxy sits between them and
keeps each non-streamed chat completion's ``usage`` (a stream carries none from this server).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

import httpx2

from tests._loopback_http import JsonHandler, loopback, serving


@dataclass
class Recording:
    """What passed through the proxy."""

    usages: list[dict[str, Any]] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)
    #: The status of every chat completion the server answered, in order.
    statuses: list[int] = field(default_factory=list)
    #: How many chat completions were at the server when each one arrived (itself included).
    concurrency: list[int] = field(default_factory=list)
    in_flight: int = 0
    streamed: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def clear(self) -> None:
        with self.lock:
            self.usages.clear()
            self.requests.clear()
            self.statuses.clear()
            self.concurrency.clear()
            self.streamed = 0

    def totals(self) -> tuple[int, int]:
        with self.lock:
            return (
                sum(u["prompt_tokens"] for u in self.usages),
                sum(u["completion_tokens"] for u in self.usages),
            )


def _handler(upstream: str, recording: Recording) -> type[BaseHTTPRequestHandler]:
    client = httpx2.Client(base_url=upstream, timeout=600.0)

    class Handler(JsonHandler):
        def _relay(self, method: str) -> None:
            size = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(size) if size else b""
            payload = json.loads(body) if body else {}
            chat = self.path.endswith("/chat/completions")
            with recording.lock:
                recording.requests.append(payload)
                if chat:
                    recording.in_flight += 1
                    recording.concurrency.append(recording.in_flight)
            try:
                self._forward(method, body, payload)
            finally:
                if chat:
                    with recording.lock:
                        recording.in_flight -= 1

        def _forward(self, method: str, body: bytes, payload: dict[str, Any]) -> None:
            headers = {"content-type": self.headers.get("content-type", "application/json")}
            with client.stream(method, self.path, content=body, headers=headers) as reply:
                self.send_response(reply.status_code)
                for name, value in reply.headers.items():
                    if name.lower() not in ("content-length", "transfer-encoding", "connection"):
                        self.send_header(name, value)
                self.send_header("connection", "close")
                self.end_headers()
                data = b""
                for piece in reply.iter_bytes():
                    self.wfile.write(piece)
                    self.wfile.flush()
                    data += piece
            if self.path.endswith("/chat/completions"):
                with recording.lock:
                    recording.statuses.append(reply.status_code)
            if payload.get("stream"):
                with recording.lock:
                    recording.streamed += 1
                return
            if reply.status_code == 200 and self.path.endswith("/chat/completions"):
                usage = json.loads(data).get("usage")
                if usage:
                    with recording.lock:
                        recording.usages.append({**usage, "model": payload.get("model")})

        def do_GET(self) -> None:
            self._relay("GET")

        def do_POST(self) -> None:
            self._relay("POST")

    return Handler


@contextmanager
def recording_proxy(upstream: str) -> Iterator[tuple[str, Recording]]:
    """A proxy to ``upstream`` (``http://host:port``) on a free loopback port; yields its URL."""
    recording = Recording()
    with serving(loopback(_handler(upstream, recording))) as url:
        yield url, recording
