"""The second Ctrl-C cuts a whole answer the ``openai`` provider's direct line (its urllib3
pool) is waiting for: the call raises ``StopRequested`` at once rather than when the server
answers. A real SIGINT, twice, lands in this process while a worker thread waits; the CLI's
streams are cut the same way (``test_cli_interrupt.py``)."""

from __future__ import annotations

import os
import signal
import threading
import time

import httpx2
import pytest

from multiagent._interrupt import StopRequested, stop_on_ctrl_c
from multiagent.models._openai_direct import DirectLine
from multiagent.models.factory import build_chat_model
from multiagent.policies import load_settings
from multiagent.sim import SimServerConfig
from tests.integration._openai_sim import openai_sim


def test_the_second_ctrl_c_cuts_a_whole_answer_the_direct_line_waits_for(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MULTIAGENT_RATE_LIMIT__REQUEST_TIMEOUT_S", "1200")  # no timeout first
    with openai_sim(monkeypatch, SimServerConfig(rpm=1e6, tpm=1e9, ttft_s=600.0)) as url:
        model = build_chat_model("standard", load_settings(provider="openai"))
        assert isinstance(model.client.line, DirectLine)
        ended: list[BaseException] = []

        def call() -> None:
            try:
                model.invoke("Plan a launch")
            except BaseException as exc:  # what ended the call is the result
                ended.append(exc)

        worker = threading.Thread(target=call, daemon=True)
        stats = url.removesuffix("/v1") + "/sim/stats"
        with stop_on_ctrl_c():  # the stop holds until the block ends, as around a run
            worker.start()
            while httpx2.get(stats).json()["in_flight"] < 1:  # the call is at the server
                time.sleep(0.01)
            os.kill(os.getpid(), signal.SIGINT)  # asks to stop: the answer may finish
            with pytest.raises(KeyboardInterrupt):
                os.kill(os.getpid(), signal.SIGINT)  # stops now: raises here, cuts the call
            worker.join(timeout=120)
            assert not worker.is_alive()
    assert [type(exc) for exc in ended] == [StopRequested]
