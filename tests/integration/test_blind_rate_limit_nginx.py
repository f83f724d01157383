"""No 429 storm against a real rate limiter that says nothing: nginx's ``limit_req``.

nginx stands in front of the simulator as a provider's gateway would: a leaky bucket of 6
requests per second for all clients, answering 429 above it, with no rate-limit headers and no
Retry-After. The profile's own limits (1000 requests per minute, 6 in flight) are far above
it, so the runtime must find the real rate itself. A batch of validations runs through it; what
nginx answered is read from nginx's own access log, and the run's retries must be its 429s.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests._nginx import chat_statuses, simulator_behind_nginx
from tests.integration._batch_cli import batch_file, cli

pytestmark = pytest.mark.slow

ITEMS = 60
VALIDATORS = 2
RATE = 6


def test_a_blind_batch_through_nginx_finds_its_rate_without_a_429_storm(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with simulator_behind_nginx(tmp_path / "nginx", rate=RATE) as (url, log):
        monkeypatch.setenv("MULTIAGENT_PROVIDER", "openai")
        monkeypatch.setenv("OPENAI_BASE_URL", url)
        monkeypatch.setenv("OPENAI_API_KEY", "gateway-key")
        monkeypatch.setenv("MULTIAGENT_CACHE__COMPLETION_ENABLED", "false")
        monkeypatch.setenv("MULTIAGENT_CACHE__ANALYSIS_ENABLED", "false")
        batch = batch_file(tmp_path, ITEMS)
        args = ["--batch", str(batch), "--validators", str(VALIDATORS), "--concurrency", "16"]
        result = cli("validate", *args, "--json")
    text = result.stdout
    doc = json.loads(text[text.index("{") :])
    statuses = chat_statuses(log)
    assert doc["status"] == "completed", {k: doc[k] for k in ("status", "error")}
    assert len(doc["results"]) == ITEMS
    assert statuses["200"] == doc["this_run"]["calls"] == ITEMS * VALIDATORS
    refused = statuses["429"]
    assert set(statuses) <= {"200", "429"}, statuses
    assert doc["this_run"]["retries"] == refused  # every 429 was retried, and counted
    # a handful: the first sends, at the profile's pace, and a probe above the rate now and
    # then (each found refused once); before 429s without Retry-After were spaced, each one
    # let the next waiting request go at once, a wall of 429s (a quarter of all attempts)
    assert refused <= 0.15 * (refused + statuses["200"]), statuses
