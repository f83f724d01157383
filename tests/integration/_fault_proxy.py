"""A loopback proxy in front of the simulator server that fails the requests of chosen agents.

The simulator's ``error_rate`` draws its faults at random over every request; a test of "one
agent fails while the others succeed" needs the fault tied to the agent. The proxy reads each
chat request's system prompt (an agent's role), answers 500 with OpenAI's error document for the
agents it is told to fail, and forwards the rest to the simulator byte for byte. Everything the
test asserts about paid calls it reads from the simulator's own ``/sim/stats``.
"""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx2
import pytest

from multiagent.nodes.agents import BUILTIN_AGENTS
from multiagent.sim.config import SimServerConfig
from multiagent.sim.runner import run_sim_server
from tests._loopback_http import JsonHandler, loopback, serving

#: Agent name by the role text its system prompt holds, for the built-in agents.
ROLES = {agent.role: agent.name for agent in BUILTIN_AGENTS}
#: A small batch: two items of one text (validated once), the other texts once each.
ITEMS = [
    {"id": "bakery", "text": "The bakery opened in 1990 and sells bread and pastries."},
    {"id": "mill", "text": "The mill grinds rye on Tuesdays and wheat on Fridays."},
    {"id": "mill-again", "text": "The mill grinds rye on Tuesdays and wheat on Fridays."},
    {"id": "dairy", "text": "The dairy sells milk from its own cows every morning."},
]

ERROR = {
    "error": {
        "message": "The server had an error while processing your request.",
        "type": "server_error",
        "param": None,
        "code": None,
    }
}


class FaultProxy:
    """Which agents fail, and how many requests of each it refused or forwarded."""

    def __init__(self, upstream: str, roles: dict[str, str]) -> None:
        #: The simulator's base URL (``http://127.0.0.1:PORT/v1``).
        self.upstream = upstream.rstrip("/")
        #: Agent name by the role text its system prompt holds.
        self.roles = roles
        #: What fails: (agent or any, text the request holds or any, forwards it may make first).
        self.rules: list[tuple[str | None, str | None, int]] = []
        self.lock = threading.Lock()
        self.refused: dict[str, int] = {}
        self.forwarded: dict[str, int] = {}
        #: Agents whose answers come back malformed: every tool call's arguments and every
        #: text an object that validates against no verdict, plan or judgement.
        self.garbled: set[str] = set()

    def garble(self, agent: str) -> None:
        """Forward ``agent``'s requests, but break what comes back (non-streamed answers)."""
        with self.lock:
            self.garbled.add(agent)

    def fail(self, agent: str | None = None, *, text: str | None = None, after: int = 0) -> None:
        """Fail every request of ``agent`` (any agent's when ``None``) that holds ``text`` (when
        given), once ``after`` more requests of that agent went through."""
        with self.lock:
            start = self.forwarded.get(agent, 0) if agent is not None else 0
            self.rules.append((agent, text, start + after))

    def heal(self) -> None:
        """Fail and garble nothing from now on."""
        with self.lock:
            self.rules.clear()
            self.garbled.clear()

    def agent_of(self, body: dict[str, Any]) -> str:
        system = next(
            (str(m.get("content")) for m in body.get("messages", []) if m.get("role") == "system"),
            "",
        )
        return next((name for role, name in self.roles.items() if role in system), "?")

    def decide(self, body: dict[str, Any]) -> bool:
        """Whether the request is refused; counted under its agent either way."""
        agent = self.agent_of(body)
        prompt = json.dumps(body.get("messages", []))
        with self.lock:
            refuse = any(
                who in (None, agent)
                and (text is None or text in prompt)
                and self.forwarded.get(agent, 0) >= allowed
                for who, text, allowed in self.rules
            )
            counts = self.refused if refuse else self.forwarded
            counts[agent] = counts.get(agent, 0) + 1
        return refuse


def _handler(proxy: FaultProxy) -> type[JsonHandler]:
    class Handler(JsonHandler):
        def do_GET(self) -> None:
            self._forward(None)

        def do_POST(self) -> None:
            raw = self.read_body()
            try:
                body = json.loads(raw)
            except ValueError:
                body = {}
            if proxy.decide(body):
                self.reply_json(500, ERROR)
                return
            self._forward(raw, garble=proxy.agent_of(body) in proxy.garbled)

        def _forward(self, raw: bytes | None, *, garble: bool = False) -> None:
            path = self.path.removeprefix("/v1")
            request = urllib.request.Request(
                proxy.upstream + path,
                data=raw,
                method="POST" if raw is not None else "GET",
                headers={"Content-Type": "application/json", "Authorization": "Bearer sim"},
            )
            try:
                with urllib.request.urlopen(request, timeout=30) as response:
                    status, headers, payload = response.status, response.headers, response.read()
            except urllib.error.HTTPError as exc:
                status, headers, payload = exc.code, exc.headers, exc.read()
            if garble and status == 200 and payload.startswith(b"{"):
                payload = _garbled(payload)
            self.send_response(status)
            for name in ("Content-Type", "Retry-After", "x-request-id"):
                if headers.get(name):
                    self.send_header(name, headers[name])
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    return Handler


def _garbled(payload: bytes) -> bytes:
    """A completion whose tool calls and text hold an object of the wrong shape."""
    document = json.loads(payload)
    broken = json.dumps({"passed": "perhaps", "confidence": 7, "steps": "none"})
    for choice in document.get("choices", []):
        message = choice.get("message", {})
        for call in message.get("tool_calls") or []:
            call["function"]["arguments"] = broken
        if message.get("content") is not None:
            message["content"] = broken
    return json.dumps(document).encode()


@contextmanager
def fault_proxy(upstream: str, roles: dict[str, str]) -> Iterator[tuple[str, FaultProxy]]:
    """Serve a :class:`FaultProxy` in front of ``upstream``; yield its ``/v1`` URL and itself."""
    proxy = FaultProxy(upstream, roles)
    with serving(loopback(_handler(proxy))) as url:
        yield f"{url}/v1", proxy


@contextmanager
def served_through_proxy(
    monkeypatch: pytest.MonkeyPatch, *, attempts: int = 2, proxied: bool = True
) -> Iterator[tuple[str, FaultProxy]]:
    """The simulator server (behind a :class:`FaultProxy` when ``proxied``), the ``openai``
    provider pointed at it; ``attempts`` per call, and no cache to answer a repeated call (so
    every call is served). Yields the simulator's URL and the proxy."""
    with (
        run_sim_server(SimServerConfig(rpm=1e6, tpm=1e9)) as sim,
        fault_proxy(sim, ROLES) as (url, proxy),
    ):
        monkeypatch.setenv("MULTIAGENT_PROVIDER", "openai")
        monkeypatch.setenv("OPENAI_API_KEY", "sim")
        monkeypatch.setenv("OPENAI_BASE_URL", url if proxied else sim)
        monkeypatch.setenv("MULTIAGENT_RATE_LIMIT__RETRY_ATTEMPTS", str(attempts))
        monkeypatch.setenv("MULTIAGENT_CACHE__COMPLETION_ENABLED", "false")
        monkeypatch.setenv("MULTIAGENT_CACHE__ANALYSIS_ENABLED", "false")
        yield sim, proxy


def served_calls(sim: str) -> int:
    """Requests the simulator at ``sim`` answered with a completion."""
    totals = httpx2.get(sim.removesuffix("/v1") + "/sim/stats").json()["totals"]
    return int(totals["successes"])
