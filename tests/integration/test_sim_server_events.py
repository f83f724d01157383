"""The simulator's event log over real HTTP: ``x-request-id`` names requests in ``/sim/events``."""

from __future__ import annotations

import time
from typing import Any

import httpx
import openai
import pytest

from multiagent.sim.config import SimServerConfig
from multiagent.sim.runner import run_sim_server

MESSAGES: list[Any] = [{"role": "user", "content": "hi"}]


def _events(url: str) -> dict[str, Any]:
    document: dict[str, Any] = httpx.get(url.removesuffix("/v1") + "/sim/events").json()
    return document


def _send(client: openai.OpenAI, request_id: str) -> None:
    client.chat.completions.create(
        model="gpt-4o", messages=MESSAGES, extra_headers={"x-request-id": request_id}
    )


def test_events_name_the_request_and_its_announced_deadline() -> None:
    # one request a minute: the second and third come well inside the second's Retry-After
    with run_sim_server(SimServerConfig(rpm=1, event_log=True)) as url:
        client = openai.OpenAI(base_url=url, api_key="sk-test", max_retries=0)
        _send(client, "first")
        before = time.time()
        with pytest.raises(openai.RateLimitError) as caught:
            _send(client, "second")
        after = time.time()
        with pytest.raises(openai.RateLimitError):
            _send(client, "third")
        wait_s = int(caught.value.response.headers["retry-after-ms"]) / 1000
        document = _events(url)
        assert document["recording"] is True
        told, early, again = document["events"]
        assert (told["kind"], told["request_id"]) == ("retry_after", "second")
        assert before <= told["at"] <= after  # epoch seconds, the clients' clock
        assert told["deadline"] == pytest.approx(told["at"] + wait_s, abs=1e-6)
        assert (early["kind"], early["request_id"]) == ("early", "third")
        assert early["deadline"] == told["deadline"]
        assert (again["kind"], again["request_id"]) == ("retry_after", "third")
        stats = httpx.get(url.removesuffix("/v1") + "/sim/stats").json()
        assert stats["totals"]["early"] == 1
        httpx.post(url.removesuffix("/v1") + "/sim/reset").raise_for_status()
        assert _events(url)["events"] == []


def test_without_the_flag_nothing_is_kept() -> None:
    with run_sim_server(SimServerConfig(rpm=1)) as url:
        client = openai.OpenAI(base_url=url, api_key="sk-test", max_retries=0)
        _send(client, "first")
        with pytest.raises(openai.RateLimitError):
            _send(client, "second")
        assert _events(url) == {"recording": False, "events": []}
