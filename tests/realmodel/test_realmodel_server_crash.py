"""llama.cpp's server killed mid-answer, down for a while, then back on its port.

What a crash of a real provider must leave: the stream it cut is a failed call (never a short
answer); calls made while it is down fail after their retries, each a recorded error; none
keeps a limiter slot or a budget hold; and once the server is back, the next call is answered.
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import pytest
from langchain_core.exceptions import ModelConnectionError
from langchain_core.messages import HumanMessage

from multiagent.models.ledger import RunLedger
from multiagent.models.pipeline import ModelPipeline
from multiagent.models.retry import RetryPolicy
from multiagent.policies import load_settings
from tests._procs import free_port
from tests.realmodel.conftest import llama_server_process

pytestmark = [pytest.mark.realmodel, pytest.mark.slow]

ATTEMPTS = 3


def test_a_server_killed_mid_stream_leaves_failed_calls_no_held_slot_and_answers_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()
    monkeypatch.setenv("MULTIAGENT_HOME", str(tmp_path))
    monkeypatch.setenv("OPENAI_API_KEY", "dummy")
    monkeypatch.setenv("OPENAI_BASE_URL", f"http://127.0.0.1:{port}/v1")
    settings = load_settings(provider="openai", overrides={"cache.completion_enabled": False})
    pipeline = ModelPipeline(settings, retry=RetryPolicy(attempts=ATTEMPTS, base_s=0.05))
    ledger = RunLedger(budget_usd=1.0)
    model: Any = pipeline.model_for("standard", agent="a", ledger=ledger)
    prompt = [HumanMessage("Write a long story about a bakery.")]

    with llama_server_process(tmp_path, "--interrupt_requests", "false", port=port) as (_, proc):
        stream = iter(model.bind(max_tokens=400).stream(prompt))
        while not str(next(stream).content):  # the answer is being written
            pass
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        with pytest.raises(ModelConnectionError):  # the connection died under the stream
            for _ in stream:
                pass
        with pytest.raises(ModelConnectionError):  # nobody listens: refused, retried, failed
            model.bind(max_tokens=8).invoke(prompt)

    controller = model.controller
    assert controller.state().in_flight == 0  # no slot kept by the cut stream or the refusals
    assert ledger.reserved_usd == 0.0  # nor a budget hold
    failed = [(c.outcome, c.attempts) for c in ledger.calls]
    assert failed == [("error", 1), ("error", ATTEMPTS)]  # text was shown: the cut is not retried

    with llama_server_process(tmp_path, "--interrupt_requests", "false", port=port):
        answer = model.bind(max_tokens=8).invoke(prompt)
    assert str(answer.content).strip()
    assert [c.outcome for c in ledger.calls] == ["error", "error", "ok"]
    assert controller.state().in_flight == 0
