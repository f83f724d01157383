"""No 429 storm against a real rate limiter that says nothing: nginx's ``limit_req``.

nginx stands in front of the simulator as a provider's gateway would: a leaky bucket of 6
requests per second for all clients, answering 429 above it, with no rate-limit headers and no
Retry-After. The profile's own limits (1000 requests per minute, 6 in flight) are far above
it, so the runtime must find the real rate itself. A batch of validations runs through it; what
nginx answered is read from nginx's own access log, and the run's retries must be its 429s.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from multiagent.cli import app
from multiagent.sim import SimServerConfig, run_sim_server
from tests._nginx import rate_limiting_proxy

pytestmark = pytest.mark.slow

ITEMS = 60
VALIDATORS = 2
RATE = 6


def test_a_blind_batch_through_nginx_finds_its_rate_without_a_429_storm(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the simulator limits nothing itself and advertises nothing: nginx is the only limit
    sim = SimServerConfig(rpm=60_000, tpm=100_000_000, ttft_s=0.02, limit_headers=False)
    with (
        run_sim_server(sim) as sim_url,
        rate_limiting_proxy(
            sim_url.removesuffix("/v1"), tmp_path / "nginx", rate=RATE, burst=2
        ) as (proxy, log),
    ):
        monkeypatch.setenv("MULTIAGENT_PROVIDER", "openai")
        monkeypatch.setenv("OPENAI_BASE_URL", f"{proxy}/v1")
        monkeypatch.setenv("OPENAI_API_KEY", "gateway-key")
        monkeypatch.setenv("MULTIAGENT_CACHE__COMPLETION_ENABLED", "false")
        monkeypatch.setenv("MULTIAGENT_CACHE__ANALYSIS_ENABLED", "false")
        batch = tmp_path / "items.jsonl"
        batch.write_text(
            "".join(
                json.dumps({"id": f"i{n}", "text": f"A loaf needs {n + 2}00 grams of flour."})
                + "\n"
                for n in range(ITEMS)
            ),
            encoding="utf-8",
        )
        args = ["--batch", str(batch), "--validators", str(VALIDATORS), "--concurrency", "16"]
        result = CliRunner().invoke(app, ["validate", *args, "--json"])
    text = result.stdout
    doc = json.loads(text[text.index("{") :])
    statuses = Counter(
        line.split()[0] for line in log.read_text().splitlines() if "/chat/completions" in line
    )
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
