"""``AdaptiveBackpressure`` gives its slot back however a call ends, at every stage.

Each test stops a call at one stage (waiting for a concurrency slot, for its pace, for a
Retry-After pause, inside the model before the first chunk, mid-stream, after the last chunk, a
stream closed early, KeyboardInterrupt) and then checks that the controller is idle and that the
next call goes through. The controller runs on a clock the test holds, so a wait for pace or
for a pause lasts until the test moves the clock: nothing depends on how fast the machine is.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.messages import BaseMessage
from langchain_core.outputs import ChatGenerationChunk, ChatResult
from pydantic import PrivateAttr

from multiagent.models.adaptive import AdaptiveBackpressure
from multiagent.models.backpressure import BackpressureConfig, BackpressureController, Ticket
from multiagent.models.retry import RetryPolicy
from multiagent.sim.model import SimulatedChatModel

PROMPT = "Name the three risks of the migration"
EXPECTED = SimulatedChatModel(model="gpt-4o-mini").invoke(PROMPT).text
CHUNKS = len(list(SimulatedChatModel(model="gpt-4o-mini").stream(PROMPT)))


class Clock:
    """A clock that moves only when the test says so."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Recording(BackpressureController):
    """A controller that notes every wait it decides: ``inf`` for a concurrency slot, else the
    seconds to the request's pace slot or to the end of a pause."""

    def __init__(self, config: BackpressureConfig, *, clock: Clock) -> None:
        super().__init__(config, clock=clock)
        self.waits: list[float] = []

    def _poll(self, ticket: Ticket) -> float:
        wait = super()._poll(ticket)
        if wait > 0:
            self.waits.append(wait)
        return wait


class Stalled(SimulatedChatModel):
    """The simulated model, held before chunk ``stall_at`` (0: before the first) until
    :meth:`go`; ``invoke`` is held before it answers."""

    stall_at: int = 0
    _go: threading.Event = PrivateAttr(default_factory=threading.Event)

    def go(self) -> None:
        self._go.set()

    def _hold(self) -> None:
        while not self._go.wait(0.005):
            pass

    async def _ahold(self) -> None:
        while not self._go.is_set():
            await asyncio.sleep(0.002)

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        self._hold()
        return super()._generate(messages, stop, run_manager, **kwargs)

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        await self._ahold()
        return await super()._agenerate(messages, stop, run_manager, **kwargs)

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        for i, chunk in enumerate(super()._stream(messages, stop, run_manager, **kwargs)):
            if i == self.stall_at:
                self._hold()
            yield chunk

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        i = 0
        async for chunk in super()._astream(messages, stop, run_manager, **kwargs):
            if i == self.stall_at:
                await self._ahold()
            i += 1
            yield chunk


def _setup(
    *, stall_at: int = 0, **config: Any
) -> tuple[AdaptiveBackpressure, Recording, Stalled, Clock]:
    values: dict[str, Any] = {"max_concurrency": 4, "requests_per_s": 1.0, "burst_s": 0.0}
    values.update(tick_s=0.01, **config)
    clock = Clock()
    controller = Recording(BackpressureConfig(**values), clock=clock)
    model = Stalled(model="gpt-4o-mini", stall_at=stall_at)
    wrapped = AdaptiveBackpressure(model, controller=controller, retry=RetryPolicy(attempts=1))
    return wrapped, controller, model, clock


def _assert_idle_and_usable(
    wrapped: AdaptiveBackpressure, model: Stalled, clock: Clock, *, answers: int
) -> None:
    """Nothing held or queued, the cancelled call recorded no outcome; once the clock moves
    on (past any pace slot or pause booked before), the next call is answered."""
    state = wrapped.controller.state()
    assert (state.in_flight, state.queued, state.samples) == (0, 0, answers)
    model.go()
    clock.now += 3600  # the outcome window forgets the calls before
    assert wrapped.invoke(PROMPT).text == EXPECTED
    state = wrapped.controller.state()
    assert (state.in_flight, state.queued, state.samples) == (0, 0, 1)


async def _until(predicate: Callable[[], bool]) -> None:
    for _ in range(20_000):
        if predicate():
            return
        await asyncio.sleep(0.001)
    raise AssertionError("the call never reached the stage under test")


def _in_flight(controller: BackpressureController, n: int = 1) -> Callable[[], bool]:
    return lambda: controller.state().in_flight == n


# -- asyncio.CancelledError at every stage ---------------------------------------------------


async def test_cancelled_while_waiting_for_a_concurrency_slot() -> None:
    wrapped, ctl, model, clock = _setup(max_concurrency=1, requests_per_s=1e6)
    holder = asyncio.create_task(wrapped.ainvoke("hold the only slot"))
    await _until(_in_flight(ctl))
    waiter = asyncio.create_task(wrapped.ainvoke(PROMPT))
    await _until(lambda: float("inf") in ctl.waits)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    model.go()
    await holder
    _assert_idle_and_usable(wrapped, model, clock, answers=1)


async def test_cancelled_while_waiting_for_its_pace() -> None:
    wrapped, ctl, model, clock = _setup()
    model.go()
    await wrapped.ainvoke("first, sent at once")
    waiter = asyncio.create_task(wrapped.ainvoke(PROMPT))
    await _until(lambda: 1.0 in ctl.waits)  # one request per second, the clock stands still
    assert set(ctl.waits) == {1.0}
    assert ctl.state().queued == 1
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    _assert_idle_and_usable(wrapped, model, clock, answers=1)


@pytest.mark.parametrize("entry", ["ainvoke", "astream"])
async def test_cancelled_while_waiting_out_a_retry_after_pause(entry: str) -> None:
    wrapped, ctl, model, clock = _setup()
    ctl.gate.pause(30.0)

    async def call() -> None:
        if entry == "ainvoke":
            await wrapped.ainvoke(PROMPT)
        else:
            async for _ in wrapped.astream(PROMPT):
                pass

    waiter = asyncio.create_task(call())
    await _until(lambda: 30.0 in ctl.waits)
    assert set(ctl.waits) == {30.0}
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    _assert_idle_and_usable(wrapped, model, clock, answers=0)


@pytest.mark.parametrize("stall_at", [0, 2])
async def test_astream_cancelled_inside_the_model_call(stall_at: int) -> None:
    """Before the first chunk (the leak the issue found) and mid-stream."""
    wrapped, ctl, model, clock = _setup(stall_at=stall_at)
    received: list[BaseMessage] = []

    async def consume() -> None:
        async for chunk in wrapped.astream(PROMPT):
            received.append(chunk)

    task = asyncio.create_task(consume())
    await _until(lambda: ctl.state().in_flight == 1 and len(received) == stall_at)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(received) == stall_at
    _assert_idle_and_usable(wrapped, model, clock, answers=0)


async def test_ainvoke_cancelled_inside_the_model_call() -> None:
    wrapped, ctl, model, clock = _setup()
    task = asyncio.create_task(wrapped.ainvoke(PROMPT))
    await _until(_in_flight(ctl))
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    _assert_idle_and_usable(wrapped, model, clock, answers=0)


async def test_abatch_cancelled_with_calls_waiting_and_in_flight() -> None:
    wrapped, ctl, model, clock = _setup(max_concurrency=2, requests_per_s=1e6)
    task = asyncio.create_task(wrapped.abatch([f"item {i}" for i in range(5)]))
    await _until(lambda: _in_flight(ctl, 2)() and float("inf") in ctl.waits)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    _assert_idle_and_usable(wrapped, model, clock, answers=0)


# -- a stream closed by its consumer ---------------------------------------------------------


@pytest.mark.parametrize("taken", [0, 1, 3, CHUNKS])
def test_stream_closed_by_its_consumer(taken: int) -> None:
    """Closed before starting, after the first chunk, mid-stream, and after the last chunk
    but before the stream said it had ended (the slot is held until then)."""
    wrapped, ctl, model, clock = _setup(stall_at=CHUNKS + 1)
    stream = wrapped.stream(PROMPT)
    for _ in range(taken):
        next(stream)
    assert ctl.state().in_flight == (1 if taken else 0)
    stream.close()
    _assert_idle_and_usable(wrapped, model, clock, answers=0)


@pytest.mark.parametrize("taken", [1, CHUNKS])
async def test_astream_closed_by_its_consumer(taken: int) -> None:
    wrapped, ctl, model, clock = _setup(stall_at=CHUNKS + 1)
    stream = wrapped.astream(PROMPT)
    for _ in range(taken):
        await anext(stream)
    assert ctl.state().in_flight == 1
    await stream.aclose()  # type: ignore[attr-defined]
    _assert_idle_and_usable(wrapped, model, clock, answers=0)


def test_a_stream_that_fails_mid_way_is_released_with_its_error() -> None:
    class Broken(Stalled):
        def _stream(self, *args: Any, **kwargs: Any) -> Iterator[ChatGenerationChunk]:
            chunks = super()._stream(*args, **kwargs)
            yield next(chunks)
            raise ConnectionResetError("the provider hung up")

    clock = Clock()
    ctl = Recording(BackpressureConfig(requests_per_s=1e6, tick_s=0.01), clock=clock)
    broken = Broken(model="gpt-4o-mini", stall_at=99)
    wrapped = AdaptiveBackpressure(broken, controller=ctl, retry=RetryPolicy(attempts=1))
    with pytest.raises(ConnectionResetError):
        list(wrapped.stream(PROMPT))
    state = ctl.state()
    assert (state.in_flight, state.queued, state.samples, state.error_rate) == (0, 0, 1, 1.0)


# -- KeyboardInterrupt -----------------------------------------------------------------------


def _interrupt_main_when(predicate: Callable[[], bool], *, model: Stalled) -> threading.Thread:
    """Send SIGINT to the main thread (Ctrl-C) once ``predicate`` holds."""
    main = threading.main_thread().ident
    assert main is not None
    assert threading.current_thread() is threading.main_thread()

    def watch() -> None:
        for _ in range(20_000):
            if predicate():
                signal.pthread_kill(main, signal.SIGINT)
                return
            threading.Event().wait(0.001)
        model.go()  # never reached: let the call finish so the test fails instead of hanging

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    return watcher


def _wait_until(predicate: Callable[[], bool]) -> None:
    for _ in range(20_000):
        if predicate():
            return
        threading.Event().wait(0.001)
    raise AssertionError("the call never reached the stage under test")


@pytest.mark.skipif(os.name != "posix", reason="signals to a thread are POSIX")
@pytest.mark.parametrize("stage", ["concurrency", "pace", "pause", "model", "mid-stream"])
def test_keyboard_interrupt_at_every_stage(stage: str) -> None:
    """Ctrl-C reaches the main thread while its ``stream`` is at ``stage``."""
    wrapped, ctl, model, clock = _setup(
        stall_at=2 if stage == "mid-stream" else 0,
        max_concurrency=1 if stage == "concurrency" else 4,
    )
    received: list[BaseMessage] = []
    holder: threading.Thread | None = None
    answers = 0
    predicate: Callable[[], bool] = _in_flight(ctl)
    if stage == "concurrency":
        holder = threading.Thread(target=wrapped.invoke, args=("hold the only slot",))
        holder.start()
        _wait_until(_in_flight(ctl))
        predicate = lambda: float("inf") in ctl.waits  # noqa: E731
    elif stage == "pace":
        model.go()
        wrapped.invoke("first, sent at once")
        answers = 1
        predicate = lambda: 1.0 in ctl.waits  # noqa: E731
    elif stage == "pause":
        ctl.gate.pause(30.0)
        predicate = lambda: 30.0 in ctl.waits  # noqa: E731
    elif stage == "mid-stream":
        predicate = lambda: len(received) == 2  # noqa: E731
    watcher = _interrupt_main_when(predicate, model=model)
    with pytest.raises(KeyboardInterrupt):
        received.extend(wrapped.stream(PROMPT))
    watcher.join()
    assert len(received) == (2 if stage == "mid-stream" else 0)
    if holder is not None:
        model.go()
        holder.join()
        answers = 1
    _assert_idle_and_usable(wrapped, model, clock, answers=answers)


def test_keyboard_interrupt_in_a_batch_worker_thread() -> None:
    """A call in one of ``batch``'s worker threads is interrupted; the others finish."""

    answered: list[str] = []

    class Interrupted(SimulatedChatModel):
        def _generate(self, messages: list[BaseMessage], *args: Any, **kw: Any) -> ChatResult:
            if "interrupt" in str(messages[-1].content):
                raise KeyboardInterrupt
            answered.append(str(messages[-1].content))
            return super()._generate(messages, *args, **kw)

    ctl = BackpressureController(BackpressureConfig(max_concurrency=2, requests_per_s=1e6))
    wrapped = AdaptiveBackpressure(
        Interrupted(model="gpt-4o-mini"), controller=ctl, retry=RetryPolicy(attempts=1)
    )
    with pytest.raises(KeyboardInterrupt):
        wrapped.batch(["one", "interrupt me", "three", "four"])
    state = ctl.state()
    assert (state.in_flight, state.queued) == (0, 0)
    # the calls that ran were recorded; the interrupted one gave no verdict on the provider
    # (batch may drop calls not yet started once one raised)
    assert (state.samples, state.error_rate) == (len(answered), 0.0)
    assert "one" in answered
    assert wrapped.invoke(PROMPT).text == EXPECTED
