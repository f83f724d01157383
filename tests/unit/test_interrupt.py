"""Ctrl-C within ``stop_on_ctrl_c``: the first asks to stop at the next model call (never an
interrupt raised inside a thread pool's locks), the second raises; the simulated provider's
waits and the pipeline's calls meet the stop in their own threads."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
from typing import Any

import pytest
from langchain_core.messages import HumanMessage

from multiagent import _interrupt
from multiagent._interrupt import (
    StopRequested,
    check_stop,
    check_stop_now,
    stop_on_ctrl_c,
    stop_requested,
    wait_for_stop_notice,
)
from multiagent.models.backpressure import BackpressureConfig, BackpressureController
from multiagent.models.ledger import RunLedger
from multiagent.models.pipeline import ModelPipeline
from multiagent.models.retry import RetryPolicy, sync_retrying
from multiagent.policies import load_settings
from multiagent.sim.model import SimulatedChatModel


def test_the_first_ctrl_c_asks_the_second_raises_and_the_block_restores() -> None:
    before = signal.getsignal(signal.SIGINT)
    with stop_on_ctrl_c():
        assert not stop_requested()
        os.kill(os.getpid(), signal.SIGINT)  # handled in this (main) thread: no exception
        assert stop_requested()
        with pytest.raises(StopRequested):
            check_stop()
        check_stop_now()  # an answer coming in goes on
        with pytest.raises(KeyboardInterrupt) as second:
            os.kill(os.getpid(), signal.SIGINT)  # the handler runs as the call returns
        assert type(second.value) is KeyboardInterrupt
        with pytest.raises(StopRequested):
            check_stop_now()  # ... until the second
    assert not stop_requested()
    check_stop_now()
    assert signal.getsignal(signal.SIGINT) is before


def test_the_first_ctrl_c_says_so_once_on_a_thread_of_its_own() -> None:
    said: list[int] = []
    with stop_on_ctrl_c(on_stop=lambda: said.append(threading.get_ident())):
        os.kill(os.getpid(), signal.SIGINT)
        wait_for_stop_notice()
        assert len(said) == 1
        assert said[0] != threading.get_ident()  # never in the signal handler itself
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
        wait_for_stop_notice()
    assert len(said) == 1  # the second Ctrl-C stops; it says nothing more


def test_a_second_ctrl_c_stops_a_streamed_answer_at_its_next_chunk(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = load_settings()
    ledger = RunLedger()
    model: Any = ModelPipeline(settings).model_for("fast", agent="researcher", ledger=ledger)
    read = 0

    def read_and_press() -> None:
        nonlocal read
        for chunk in model.stream([HumanMessage("Write a long plan for a bakery launch")]):
            if not str(chunk.content):
                continue
            read += 1
            if read == 1:  # the first Ctrl-C: the answer goes on
                monkeypatch.setattr(_interrupt, "_requested", True)
            elif read == 3:  # the second: it stops
                monkeypatch.setattr(_interrupt, "_now", True)

    with pytest.raises(StopRequested):
        read_and_press()
    assert read == 3
    assert [c.outcome for c in ledger.calls] == ["cancelled"]


def test_a_simulated_wait_ends_when_a_stop_is_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    model = SimulatedChatModel(model="gpt-4o-mini", ttft_s=60.0)
    raised: list[BaseException] = []

    def call() -> None:
        try:
            model.invoke([HumanMessage("hello")])
        except BaseException as exc:
            raised.append(exc)

    thread = threading.Thread(target=call)
    thread.start()
    monkeypatch.setattr(_interrupt, "_requested", True)
    thread.join()  # without the stop: a minute, and no exception
    assert [type(e) for e in raised] == [StopRequested]


def test_no_model_call_starts_once_a_stop_is_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load_settings()
    ledger = RunLedger(budget_usd=1.0)
    model: Any = ModelPipeline(settings).model_for("fast", agent="researcher", ledger=ledger)
    monkeypatch.setattr(_interrupt, "_requested", True)
    with pytest.raises(StopRequested):
        model.invoke([HumanMessage("hello")])
    totals = ledger.totals()  # nothing sent, nothing held: one cancelled call of 0 tokens
    assert (totals["calls"], totals["cancelled"], totals["input_tokens"]) == (1, 1, 0)
    assert ledger.reserved_usd == 0
    assert ledger.budget_usd == 1.0


@pytest.mark.parametrize("api", ["sync", "async"])
def test_no_cache_hit_is_served_once_a_stop_is_asked(
    api: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = load_settings()
    ledger = RunLedger(budget_usd=1.0)
    model: Any = ModelPipeline(settings).model_for("fast", agent="researcher", ledger=ledger)
    prompt = [HumanMessage("hello again")]
    model.invoke(prompt)  # answered, and now in the completion cache
    monkeypatch.setattr(_interrupt, "_requested", True)

    def again() -> object:
        return model.invoke(prompt) if api == "sync" else asyncio.run(model.ainvoke(prompt))

    with pytest.raises(StopRequested):
        again()
    # the hit was not served after the stop: the call was cancelled
    assert [c.outcome for c in ledger.calls] == ["ok", "cancelled"]


def test_a_call_waiting_for_a_slot_stops_when_a_stop_is_asked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    controller = BackpressureController(BackpressureConfig(max_concurrency=1))
    raised: list[BaseException] = []
    with controller.slot():  # the only slot, taken and kept

        def wait_for_the_slot() -> None:
            try:
                with controller.slot():
                    pass
            except BaseException as exc:
                raised.append(exc)

        monkeypatch.setattr(_interrupt, "_requested", True)
        waiter = threading.Thread(target=wait_for_the_slot, daemon=True)
        waiter.start()
        waiter.join(30.0)  # without the stop: until the slot is given back, after this join
        assert not waiter.is_alive(), "the call kept waiting for a slot after the stop"
    assert [type(e) for e in raised] == [StopRequested]
    assert (controller.state().in_flight, controller.state().queued) == (0, 0)


def test_a_retry_s_backoff_ends_when_a_stop_is_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    policy = RetryPolicy(attempts=3, base_s=600.0, cap_s=600.0)
    attempts = 0

    def call_failing_until_stopped() -> None:
        nonlocal attempts
        for attempt in sync_retrying(policy, rng=_FixedDraw()):
            with attempt:
                attempts += 1
                monkeypatch.setattr(_interrupt, "_requested", True)  # asked during the call
                raise ConnectionError("reset by peer")

    raised: list[BaseException] = []

    def call() -> None:
        try:
            call_failing_until_stopped()
        except BaseException as exc:
            raised.append(exc)

    caller = threading.Thread(target=call, daemon=True)
    caller.start()
    caller.join(30.0)  # without the stop: ten minutes asleep, then another attempt
    assert not caller.is_alive(), "the backoff went on sleeping after the stop"
    assert [type(e) for e in raised] == [StopRequested]
    assert attempts == 1


class _FixedDraw:
    """A jitter source that draws the longest wait."""

    def uniform(self, low: float, high: float) -> float:
        return high
