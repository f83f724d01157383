"""A pipeline's in-flight bound: more callers than places, never more calls past the gate."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest
from langchain_core.messages import HumanMessage

from multiagent.distributed.entry_guard import EntryGuard, TakenOver
from multiagent.models import _in_flight
from multiagent.models._in_flight import GatedController, InFlightGate
from multiagent.models.adaptive import reset_shared_controllers
from multiagent.models.backpressure import BackpressureConfig, BackpressureController
from multiagent.models.ledger import RunLedger
from multiagent.models.pipeline import ModelPipeline
from multiagent.policies import load_settings


@pytest.fixture(autouse=True)
def fresh_controllers() -> Iterator[None]:
    reset_shared_controllers()
    yield
    reset_shared_controllers()


def _controller() -> BackpressureController:
    # pace and concurrency far above the test's: only the gate may hold callers back
    return BackpressureController(BackpressureConfig(max_concurrency=64, requests_per_s=1e6))


class _Peak:
    """Counts callers inside a block and keeps the highest count seen."""

    def __init__(self) -> None:
        self.now = self.peak = self.calls = 0
        self._lock = threading.Lock()

    def enter(self) -> None:
        with self._lock:
            self.now += 1
            self.calls += 1
            self.peak = max(self.peak, self.now)

    def leave(self) -> None:
        with self._lock:
            self.now -= 1


def test_threads_beyond_the_bound_wait_at_the_gate_and_every_call_is_made() -> None:
    gated = GatedController(_controller(), InFlightGate(3))
    peak, full = _Peak(), threading.Event()

    def caller() -> None:
        for _ in range(20):
            with gated.slot(tokens=10) as passage:
                peak.enter()
                if peak.now == 3:
                    full.set()
                full.wait(1.0)  # hold the place until the gate has been full once
                peak.leave()
                passage.answered()

    threads = [threading.Thread(target=caller) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert peak.calls == 160
    assert peak.peak == 3  # reached, never passed
    assert gated.controller._holders == 0  # every controller slot given back


def test_a_failed_call_gives_its_place_back() -> None:
    gated = GatedController(_controller(), InFlightGate(1))
    for _ in range(3):
        with pytest.raises(RuntimeError), gated.slot() as _passage:
            raise RuntimeError("provider down")
    with gated.slot() as passage:  # the one place is free again
        passage.answered()
    assert gated.controller._holders == 0


def test_tasks_beyond_the_bound_wait_without_blocking_the_loop() -> None:
    gated = GatedController(_controller(), InFlightGate(2))
    peak = _Peak()

    async def caller() -> None:
        for _ in range(10):
            async with gated.aslot(tokens=10) as passage:
                peak.enter()
                await asyncio.sleep(0)  # let the other tasks try their way in
                peak.leave()
                passage.answered()

    async def main() -> None:
        await asyncio.gather(*(caller() for _ in range(6)))

    asyncio.run(main())
    assert peak.calls == 60
    assert peak.peak == 2


def test_a_cancelled_wait_at_the_gate_holds_no_place() -> None:
    gate = InFlightGate(1)
    gated = GatedController(_controller(), gate)

    async def main() -> None:
        gate.acquire()  # the only place is taken
        waiter = asyncio.create_task(gated.aslot().__aenter__())
        await asyncio.sleep(0.01)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        gate.release()
        # the cancelled waiter's thread took the place when it came free and gave it back:
        # later calls get through one after another
        for _ in range(2):
            async with asyncio.timeout(5):
                async with gated.aslot() as passage:
                    passage.answered()

    asyncio.run(main())
    assert gated.controller._holders == 0


def test_the_pipeline_bound_is_one_gate_over_every_model() -> None:
    settings = load_settings()
    bounded = ModelPipeline(settings, max_in_flight=2)
    first = bounded.model_for("fast", agent="a")
    second = bounded.model_for("premium", agent="b")
    assert isinstance(first.controller, GatedController)  # type: ignore[attr-defined]
    assert first.controller.gate is second.controller.gate  # type: ignore[attr-defined]
    assert first.controller.gate.limit == 2  # type: ignore[attr-defined]
    # a call through the gate is made and accounted as without it
    answer = first.invoke([HumanMessage(content="Is rye baked at 230 C?")])
    assert answer.content
    unbounded = ModelPipeline(settings).model_for("fast", agent="a")
    assert not isinstance(unbounded.controller, GatedController)  # type: ignore[attr-defined]


def test_a_bound_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        InFlightGate(0)


def test_a_waiter_cancelled_before_its_loop_closes_holds_no_place_after() -> None:
    gate = InFlightGate(1)
    gate.acquire()  # the only place is taken, and is given back only after the loop is gone

    async def main() -> None:
        waiter = asyncio.create_task(gate.aacquire())
        await asyncio.sleep(0.05)  # its thread is waiting for the place
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter

    # the loop's shutdown waits for the waiter's thread: it stops waiting once abandoned
    asyncio.run(main())
    gate.release()
    # no thread took the place for a waiter that is gone: it is free for the next caller
    assert gate._free.acquire(timeout=5)


class _SaysWhenWaited:
    """A gate's semaphore that sets ``waiting`` when a caller has to wait for a place."""

    def __init__(self, real: threading.BoundedSemaphore, waiting: threading.Event) -> None:
        self.real = real
        self.waiting = waiting

    def acquire(self, blocking: bool = True, timeout: float | None = None) -> bool:
        if blocking:
            self.waiting.set()
        return self.real.acquire(blocking, timeout)

    def release(self) -> None:
        self.real.release()


class _FullGate:
    """``gate``'s one place, held by the test; says when a caller waits for it."""

    def __init__(self, gate: InFlightGate) -> None:
        self.gate = gate
        self.waiting = threading.Event()
        self._real = gate._free
        gate.acquire()  # the one place is taken: every caller waits
        gate._free = _SaysWhenWaited(self._real, self.waiting)  # type: ignore[assignment]

    def free_places(self) -> int:
        taken = 0
        while self._real.acquire(blocking=False):
            taken += 1
        for _ in range(taken):
            self._real.release()
        return taken


class _Owner:
    """A queue entry's owner question whose answer flips to "another's" once it was asked."""

    def __init__(self) -> None:
        self.asked = 0
        self.ours = True

    def __call__(self) -> bool:
        self.asked += 1
        return self.ours


@pytest.mark.parametrize("api", ["sync", "async", "stream"])
def test_a_call_that_waited_at_the_gate_is_not_sent_once_its_entry_was_taken_over(
    api: str,
) -> None:
    """A worker frozen while its call waited for a place: the entry was taken over meanwhile,
    so once the call has its place it asks again, and is not sent."""
    settings = load_settings(overrides={"cache.completion_enabled": False})
    pipeline = ModelPipeline(settings, max_in_flight=1)
    assert pipeline.in_flight is not None
    full = _FullGate(pipeline.in_flight)
    owner = _Owner()
    ledger = RunLedger(shared=EntryGuard(owner))
    model = pipeline.model_for("fast", agent="a", ledger=ledger)
    raised: list[BaseException] = []

    def call() -> None:
        prompt = [HumanMessage(content="Is rye baked at 230 C?")]
        try:
            if api == "sync":
                model.invoke(prompt)
            elif api == "async":
                asyncio.run(model.ainvoke(prompt))
            else:
                for _ in model.stream(prompt):
                    pass
        except BaseException as exc:  # TakenOver is no Exception
            raised.append(exc)

    caller = threading.Thread(target=call)
    caller.start()
    assert full.waiting.wait(30)  # reserved (asked once: ours), now waiting for the place
    assert owner.asked == 1
    owner.ours = False  # frozen meanwhile: another worker took the entry over
    full.gate.release()
    caller.join(30)
    assert [type(e) for e in raised] == [TakenOver]
    (record,) = ledger.calls
    assert record.outcome == "cancelled"
    assert (record.input_tokens, record.output_tokens, record.cost_usd) == (0, 0, 0.0)
    assert model.controller.controller.state().samples == 0  # type: ignore[attr-defined]
    assert full.free_places() == 1  # the place taken and refused went back


@pytest.mark.parametrize("api", ["sync", "async"])
def test_the_http_gate_asks_before_it_sends(api: str) -> None:
    """Where the gate is held around the HTTP exchange: a request refused once it has its
    place is not written, and its place goes back; one allowed is sent as before."""
    import httpx2

    from multiagent.models._gated_http import AsyncGatedTransport, GatedTransport
    from multiagent.models._in_flight import asked_before_send

    sent: list[httpx2.Request] = []

    def answer(request: httpx2.Request) -> httpx2.Response:
        sent.append(request)
        return httpx2.Response(200, content=b"{}")

    gate = InFlightGate(1)
    owner = _Owner()
    guard = EntryGuard(owner)
    request = httpx2.Request("POST", "http://127.0.0.1:9/v1/chat/completions")

    def send() -> None:
        with asked_before_send(guard):
            if api == "sync":
                GatedTransport(httpx2.MockTransport(answer), gate).handle_request(request).close()
            else:

                async def asend() -> None:
                    transport = AsyncGatedTransport(httpx2.MockTransport(answer), gate)
                    response = await transport.handle_async_request(request)
                    await response.aclose()

                asyncio.run(asend())

    send()
    assert (len(sent), owner.asked) == (1, 1)
    owner.ours = False
    with pytest.raises(TakenOver):
        send()
    assert len(sent) == 1  # the refused request was not written
    gate.acquire()  # its place went back
    gate.release()


def test_a_call_with_no_shared_budget_asks_nothing_of_the_guard_protocol(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # a runtime-checkable Protocol's isinstance costs ~7 µs; most calls have no shared budget
    class NotAsked(type):
        def __instancecheck__(cls, instance: object) -> bool:
            raise AssertionError(f"isinstance({instance!r}, SendGuard)")

    monkeypatch.setattr(_in_flight, "SendGuard", NotAsked("SendGuard", (), {}))
    with _in_flight.asked_before_send(None):
        assert _in_flight._BEFORE_SEND.get() is None
