"""A stand-in for the LangSmith API on 127.0.0.1 that keeps every run it is sent.

It answers ``GET /info`` (so the SDK picks its ingest endpoint), and accepts runs the three ways
the SDK sends them: ``POST /runs`` and ``PATCH /runs/{id}``, ``POST /runs/batch`` and
``POST /runs/multipart``. A run's create and its updates are merged into one dict per run id.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from email import policy
from email.parser import BytesParser
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests._loopback_http import JsonHandler, loopback, serving

_INFO = {
    "version": "0.0.0-capture",
    "instance_flags": {},
    "batch_ingest_config": {
        "use_multipart_endpoint": True,
        "size_limit": 100,
        "size_limit_bytes": 20_971_520,
        "scale_up_nthreads_limit": 4,
        "scale_up_qsize_trigger": 1000,
        "scale_down_nempty_trigger": 4,
    },
}


class CapturedRuns:
    """The runs received, by id, and which endpoints were used."""

    def __init__(self) -> None:
        self.runs: dict[str, dict[str, Any]] = {}
        self.endpoints: list[str] = []
        self._lock = threading.Lock()

    def merge(self, run_id: str, fields: dict[str, Any]) -> None:
        with self._lock:
            self.runs.setdefault(run_id, {"id": run_id}).update(fields)

    def all(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(run) for run in self.runs.values()]


def _parts(content_type: str, body: bytes) -> Iterator[tuple[str, bytes]]:
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode()
    message = BytesParser(policy=policy.HTTP).parsebytes(head + body)
    for part in message.iter_parts():  # type: ignore[attr-defined]
        name = part.get_param("name", header="content-disposition")
        yield str(name), part.get_payload(decode=True) or b""


def _handler(captured: CapturedRuns) -> type[BaseHTTPRequestHandler]:
    class Handler(JsonHandler):
        def do_GET(self) -> None:
            self.reply_json(200, _INFO if self.path.startswith("/info") else {})

        def do_PATCH(self) -> None:
            body = self.read_body()
            captured.endpoints.append("PATCH /runs")
            captured.merge(self.path.rstrip("/").rsplit("/", 1)[-1], json.loads(body))
            self.reply_json(200, {})

        def do_POST(self) -> None:
            body = self.read_body()
            path = self.path.split("?")[0].rstrip("/")
            if path.endswith("/runs/multipart"):
                captured.endpoints.append("POST /runs/multipart")
                for name, payload in _parts(self.headers["Content-Type"], body):
                    kind, _, rest = name.partition(".")
                    run_id, _, field = rest.partition(".")
                    if kind not in ("post", "patch") or not run_id:
                        continue
                    value = json.loads(payload) if payload else None
                    captured.merge(run_id, {field: value} if field else value or {})
            elif path.endswith("/runs/batch"):
                captured.endpoints.append("POST /runs/batch")
                document = json.loads(body)
                for run in [*document.get("post", []), *document.get("patch", [])]:
                    captured.merge(str(run["id"]), run)
            elif path.endswith("/runs"):
                captured.endpoints.append("POST /runs")
                run = json.loads(body)
                captured.merge(str(run["id"]), run)
            self.reply_json(200, {})

    return Handler


@contextmanager
def langsmith_capture() -> Iterator[tuple[str, CapturedRuns]]:
    """Serve on 127.0.0.1 (a free port); yield the endpoint URL and the captured runs."""
    captured = CapturedRuns()
    with serving(loopback(_handler(captured))) as url:
        yield url, captured
