"""A run given up while a real server streams its answer: the node's call, on a LangGraph worker
thread the cancellation does not reach, stops at its next chunk instead of reading the answer to
its end, and no request follows; a call still waiting for the server's first byte has its
connection cut. Ctrl-C is not a run given up: an answer the server is already
streaming is read to its end and kept (README: a call at a provider ends first), and no call
starts after it."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from typing import Any

import httpx2
import pytest
from langchain_core.messages import HumanMessage

from multiagent import _interrupt
from multiagent.graphs.inputs import meeting_input, validation_input
from multiagent.graphs.workflows import compile_workflow
from multiagent.models.ledger import RunLedger
from multiagent.models.pipeline import ModelPipeline
from multiagent.nodes.agents_file import load_agents
from multiagent.nodes.context import build_context
from multiagent.policies import load_settings
from tests._recorded import recorded_calls
from tests.realmodel._recorder import Recording

pytestmark = [pytest.mark.realmodel, pytest.mark.slow]

#: A turn far longer than the few tokens read before the cancellation lands.
LONG_TURN = 400


def test_a_cancelled_run_stops_reading_the_real_servers_stream(
    openai_real: Recording, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MULTIAGENT_MODELS__MAX_OUTPUT_TOKENS__SPEAK", str(LONG_TURN))
    settings = load_settings()
    agents = load_agents(settings)
    context = build_context(
        settings, agents=agents, pipeline=ModelPipeline(settings), analysis_cache=None
    )
    graph = compile_workflow("meeting")
    inputs = meeting_input(
        "Write out, in full, the story of how the bakery was founded",
        agents=agents, participants=["researcher", "critic"], rounds=1,
    )  # fmt: skip

    async def cancel_at_the_first_token() -> list[Any]:
        tokens: list[Any] = []

        async def read() -> None:
            async for chunk, _meta in graph.astream(
                inputs, context=context, stream_mode="messages"
            ):
                if str(getattr(chunk, "content", "")):
                    tokens.append(chunk)
                    reading.set()

        reading = asyncio.Event()
        run = asyncio.create_task(read())
        await reading.wait()
        run.cancel()
        with pytest.raises(asyncio.CancelledError):
            await run
        return tokens

    tokens = asyncio.run(cancel_at_the_first_token())
    assert tokens
    calls = recorded_calls()
    # the first speaker's streamed call ended at a chunk, cancelled; nothing read to its end
    assert (calls["cancelled"], calls["ok"]) == (1, 0), calls
    assert len(openai_real.requests) == 1  # no speaker after the first


def test_ctrl_c_mid_stream_lets_the_real_answer_finish_and_starts_no_call(
    openai_real: Recording, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = load_settings()
    ledger = RunLedger()
    model: Any = ModelPipeline(settings).model_for("standard", agent="a", ledger=ledger)
    prompt = [HumanMessage("Count from one to twenty in words.")]

    text = ""
    try:
        for chunk in model.bind(max_tokens=16).stream(prompt):
            if str(chunk.content) and not _interrupt.stop_requested():
                monkeypatch.setattr(_interrupt, "_requested", True)  # Ctrl-C at the first token
            text += str(chunk.content)
    except _interrupt.StopRequested:
        pytest.fail("Ctrl-C cut the answer the server was already streaming")

    [record] = ledger.calls
    assert record.outcome == "ok"  # read to its finish_reason, not cut at the next chunk
    assert record.output_tokens > 1
    assert text
    with pytest.raises(_interrupt.StopRequested):
        model.invoke(prompt)
    assert len(openai_real.requests) == 1  # no call started after Ctrl-C


#: SmolLM2's end-of-turn token, forbidden to the request that keeps the server busy.
_END_OF_TURN = 2


def test_a_cancelled_run_cuts_its_calls_queued_behind_another_generation(
    openai_real: Recording,
) -> None:
    """llama.cpp's server generates one answer at a time: the run's validators, sent while
    another request generates, wait for their first byte in a socket read that nothing but
    the socket reaches. Giving the run up cuts them: the run ends while the other generation
    still runs (without the cut it waits for that one and for its own), and both calls are
    recorded cancelled."""
    settings = load_settings()
    agents = load_agents(settings)
    context = build_context(
        settings, agents=agents, pipeline=ModelPipeline(settings), analysis_cache=None
    )
    inputs = validation_input(
        ["The bakery opens on Monday."], settings=settings, agents=agents, validators=2
    )
    busy = threading.Thread(target=_generate_at_length, args=(os.environ["OPENAI_BASE_URL"],))
    busy.start()
    try:
        while not openai_real.requests:  # the long generation is at the server
            time.sleep(0.01)

        async def give_up_while_queued() -> None:
            run = asyncio.create_task(
                compile_workflow("validation").ainvoke(inputs, context=context)
            )
            while len(openai_real.requests) < 3:  # both validators' calls wait behind it
                await asyncio.sleep(0.01)
            run.cancel()
            with pytest.raises(asyncio.CancelledError):
                await run

        asyncio.run(give_up_while_queued())  # returns once the cut calls' threads have ended
        assert busy.is_alive(), "the run waited for the server's other generation"
        calls = recorded_calls()
        assert (calls["cancelled"], calls["ok"], calls["error"]) == (2, 0, 0), calls
    finally:
        busy.join()
        # the server still answers the cut calls' requests, which the proxy relays to nobody
        while openai_real.in_flight:
            time.sleep(0.05)


def _generate_at_length(url: str) -> None:
    """A chat completion of 600 tokens, its end of turn forbidden, straight to the server."""
    body = {
        "model": "smollm2",
        "messages": [{"role": "user", "content": "Count from one to a thousand in words."}],
        "max_tokens": 600,
        "logit_bias": {str(_END_OF_TURN): -100},
    }
    reply = httpx2.post(f"{url}/chat/completions", json=body, timeout=600)
    assert reply.json()["usage"]["completion_tokens"] == 600
