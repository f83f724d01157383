"""The backpressure controller's decisions, driven by a fake clock and scripted outcomes."""

from __future__ import annotations

import asyncio
import itertools
import math

import httpx2
import openai
import pytest

from multiagent.models._gate import ProviderGate
from multiagent.models.backpressure import BackpressureConfig, BackpressureController, Ticket
from multiagent.policies import load_settings
from multiagent.sim.model import rate_limit_error, server_error


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def make(clock: FakeClock, **overrides: object) -> BackpressureController:
    values: dict[str, object] = {
        "max_concurrency": 8,
        "requests_per_s": 1e6,
        "burst_s": 1.0,
        "min_samples": 10,
        "use_limit_headers": False,
    }
    values.update(overrides)
    # pin the Little's-law floor to max_concurrency so these tests see the AIMD limit alone
    values.setdefault("concurrency_cap", values["max_concurrency"])
    return BackpressureController(BackpressureConfig(**values), clock=clock)  # type: ignore[arg-type]


def send(ctl: BackpressureController, tokens: int = 0) -> Ticket:
    ticket = ctl.request(tokens=tokens)
    assert ctl.poll(ticket) == 0
    return ticket


def run_window(
    ctl: BackpressureController,
    clock: FakeClock,
    *,
    calls: int,
    rtt: float,
    every: float,
    fail_every: int = 0,
) -> None:
    """Send ``calls`` requests one after another, each answered after ``rtt``."""
    for i in range(calls):
        ticket = ctl.request()
        while (wait := ctl.poll(ticket)) > 0:
            clock.advance(min(wait, every))
        clock.advance(rtt)
        failed = fail_every and i % fail_every == 0
        ctl.release(ticket, error=server_error() if failed else None)
        clock.advance(every)


def test_concurrency_is_bounded_and_freed_by_release() -> None:
    clock = FakeClock()
    ctl = make(clock, max_concurrency=3)
    held = [send(ctl) for _ in range(3)]
    waiting = ctl.request()
    assert ctl.poll(waiting) == math.inf
    assert ctl.state().in_flight == 3
    ctl.release(held[0])
    assert ctl.poll(waiting) == 0
    assert ctl.state().in_flight == 3


def test_sends_are_spaced_by_the_rate_and_by_tokens() -> None:
    clock = FakeClock()
    ctl = make(clock, requests_per_s=10.0, tokens_per_s=1000.0, burst_s=0.0)
    first = send(ctl, tokens=50)
    second = ctl.request(tokens=300)
    assert ctl.poll(second) == pytest.approx(0.1)  # 1 / 10 req/s
    clock.advance(0.1)
    assert ctl.poll(second) == 0
    third = ctl.request(tokens=10)
    # the tokens of the second request (300 at 1000/s) hold the third longer than the rate
    assert ctl.poll(third) == pytest.approx(0.3)
    for ticket in (first, second):
        ctl.release(ticket)


def test_idle_controller_lets_a_short_burst_through() -> None:
    clock = FakeClock()
    ctl = make(clock, requests_per_s=10.0, burst_s=0.5)
    burst = [ctl.poll(ctl.request()) for _ in range(6)]
    assert burst == [0, 0, 0, 0, 0, 0]  # 0.5 s of 10 req/s, plus the first
    assert ctl.poll(ctl.request()) > 0


def test_error_rate_above_threshold_cuts_limit_and_stretches_waits() -> None:
    clock = FakeClock()
    ctl = make(clock, max_concurrency=10, error_rate_threshold=0.10, max_wait_multiplier=3.0)
    run_window(ctl, clock, calls=30, rtt=0.05, every=0.05, fail_every=3)  # 33% errors
    state = ctl.state()
    assert state.limit == 7  # 10 x 0.7, once: a cut waits half a window for the next
    assert state.wait_multiplier == pytest.approx(1.5)
    assert state.limit_cuts == 1
    assert state.error_rate > 0.10
    run_window(ctl, clock, calls=600, rtt=0.05, every=0.05, fail_every=2)  # a long storm
    state = ctl.state()
    assert state.limit >= 1
    assert state.wait_multiplier <= 3.0
    assert state.limit_cuts >= 3


def test_slow_round_trips_cut_the_limit() -> None:
    clock = FakeClock()
    ctl = make(clock, max_concurrency=16, rtt_threshold_s=5.0)
    tickets = [send(ctl) for _ in range(12)]
    clock.advance(6.0)
    for ticket in tickets:
        ctl.release(ticket)
    assert ctl.state().limit == 16  # judged once per tick, not on every answer
    clock.advance(0.5)
    ctl.release(send(ctl))
    assert ctl.state().rtt_p95_s == pytest.approx(6.0)
    assert ctl.state().limit == 11  # 16 x 0.7


def test_errors_below_threshold_do_not_cut() -> None:
    clock = FakeClock()
    ctl = make(clock, max_concurrency=10, error_rate_threshold=0.10)
    run_window(ctl, clock, calls=200, rtt=0.05, every=0.05, fail_every=20)  # 5% errors
    assert ctl.state().limit == 10
    assert ctl.state().limit_cuts == 0


def test_healthy_and_saturated_grows_back_additively_within_bounds() -> None:
    clock = FakeClock()
    ctl = make(clock, max_concurrency=6, min_concurrency=2)
    run_window(ctl, clock, calls=400, rtt=0.05, every=0.05, fail_every=1)  # all errors
    assert ctl.state().limit == 2  # never below min_concurrency
    limits = []
    for _ in range(120):  # saturate: keep the limit's worth of requests in flight
        tickets = []
        while True:
            ticket = ctl.request()
            while 0 < (wait := ctl.poll(ticket)) < math.inf:
                clock.advance(wait)
            if wait == math.inf:
                ctl.cancel(ticket)
                break
            tickets.append(ticket)
        clock.advance(0.3)
        for held in tickets:
            ctl.release(held)
        limits.append(ctl.state().limit)
    assert limits == sorted(limits)  # only up
    assert max(b - a for a, b in itertools.pairwise(limits)) <= 1  # one at a time
    assert limits[-1] == 6  # and never past max_concurrency
    assert ctl.state().wait_multiplier == pytest.approx(1.0)


def test_retry_after_holds_every_caller_of_the_provider() -> None:
    clock = FakeClock()
    gate = ProviderGate(clock=clock)
    config = BackpressureConfig(max_concurrency=4, requests_per_s=100.0, use_limit_headers=False)
    mini = BackpressureController(config, clock=clock, gate=gate)
    large = BackpressureController(config, clock=clock, gate=gate)
    ticket = send(mini)
    mini.release(ticket, error=rate_limit_error(2.5))  # retry-after-ms: 2500
    other = large.request()
    waits = []
    while (wait := large.poll(other)) > 0:
        waits.append(wait)
        clock.advance(wait)
    assert waits[0] == pytest.approx(2.5)
    assert large.state().paused_for_s == 0.0
    assert clock.now >= 1000.0 + 2.5  # nothing left before the Retry-After expired
    assert mini.state().time_paused_s == pytest.approx(2.5)


def test_a_429_cuts_the_rate_to_below_the_delivered_rate_once_per_overload() -> None:
    clock = FakeClock()
    ctl = make(clock, requests_per_s=50.0, max_concurrency=64, backoff=0.9, burst_s=1.0)
    for _ in range(40):  # 20 answers per second for two seconds
        ctl.release(send(ctl))
        clock.advance(0.05)
    in_flight = [send(ctl) for _ in range(3)]
    clock.advance(0.01)
    ctl.release(in_flight[0], error=rate_limit_error(0.01))
    assert ctl.state().rate_per_s == pytest.approx(0.9 * 20.0, rel=0.05)
    assert ctl.state().rate_cuts == 1
    ctl.release(in_flight[1], error=rate_limit_error(0.01))  # sent before the cut
    assert ctl.state().rate_cuts == 1


def test_advertised_limits_set_the_ceiling_and_their_changes_move_the_rate() -> None:
    clock = FakeClock()
    ctl = make(clock, requests_per_s=1000.0, use_limit_headers=True, headroom=0.98)
    headers = {"x-ratelimit-limit-requests": "1200", "x-ratelimit-limit-tokens": "600000"}
    ctl.release(send(ctl), headers=headers)
    assert ctl.state().rate_per_s == pytest.approx(0.98 * 20.0)
    assert ctl.state().advertised_requests_per_s == pytest.approx(20.0)
    ctl.release(send(ctl), headers={**headers, "x-ratelimit-limit-requests": "600"})
    assert ctl.state().rate_per_s == pytest.approx(0.98 * 10.0)
    ctl.release(send(ctl), headers={**headers, "x-ratelimit-limit-requests": "900"})
    assert ctl.state().rate_per_s == pytest.approx(0.98 * 15.0)


def test_a_raised_limit_is_caught_up_for_the_round_trip_it_took_to_learn() -> None:
    clock = FakeClock()
    ctl = make(clock, requests_per_s=1000.0, use_limit_headers=True, headroom=1.0, burst_s=1.0)
    headers = {"x-ratelimit-limit-requests": "600"}  # 10 req/s
    ctl.release(send(ctl), headers=headers)
    for _ in range(30):  # a steady queue at 10 req/s uses up the burst allowance
        ticket = ctl.request()
        while (wait := ctl.poll(ticket)) > 0:
            clock.advance(wait)
        ctl.release(ticket)
    messenger = ctl.request()
    while (wait := ctl.poll(messenger)) > 0:
        clock.advance(wait)
    clock.advance(0.5)  # its round trip of half a second reveals the raise to 20 req/s
    ctl.release(messenger, headers={"x-ratelimit-limit-requests": "1200"})
    assert ctl.state().rate_per_s == pytest.approx(20.0)
    now_sends = sum(1 for _ in range(12) if ctl.poll(ctl.request()) == 0)
    assert now_sends == 1 + 5  # one on time, and the 0.5 s x 10 req/s the raise left unused


def test_pace_grows_only_while_it_holds_requests_back_and_never_past_its_ceiling() -> None:
    clock = FakeClock()
    ctl = make(
        clock,
        requests_per_s=10.0,
        max_requests_per_s=20.0,
        growth=0.05,
    )
    for _ in range(20):  # app-limited: one request per second never waits
        ctl.release(send(ctl))
        clock.advance(1.0)
    assert ctl.state().rate_per_s == pytest.approx(10.0)
    for _ in range(400):  # back to back: the pace is what holds them
        ticket = ctl.request()
        while (wait := ctl.poll(ticket)) > 0:
            clock.advance(wait)
        ctl.release(ticket)
    assert ctl.state().rate_per_s == pytest.approx(20.0)  # no 429 came: up to the ceiling
    assert ctl.state().ceiling_per_s == 20.0


def test_concurrency_refusal_cuts_the_limit_not_the_rate() -> None:
    clock = FakeClock()
    ctl = make(clock, max_concurrency=10)
    headers = {
        "retry-after-ms": "10",
        "x-ratelimit-remaining-requests": "5",
        "x-ratelimit-remaining-tokens": "900",
    }
    response = httpx2.Response(429, headers=headers, request=httpx2.Request("POST", "http://x"))
    error = openai.RateLimitError("concurrency", response=response, body=None)
    rate = ctl.state().rate_per_s
    ctl.release(send(ctl), error=error)
    assert ctl.state().limit == 7
    assert ctl.state().rate_per_s == rate


def test_profile_maps_onto_the_config() -> None:
    rate_limit = load_settings(env="prod_quality").profile.rate_limit
    config = BackpressureConfig.from_profile(rate_limit)
    assert config.max_concurrency == rate_limit.max_concurrency
    assert config.requests_per_s == pytest.approx(rate_limit.requests_per_minute / 60)
    assert config.max_wait_multiplier == rate_limit.max_wait_multiplier
    with pytest.raises(ValueError):
        BackpressureConfig(min_concurrency=5, max_concurrency=2)


async def test_async_waiters_never_exceed_the_limit() -> None:
    ctl = BackpressureController(
        BackpressureConfig(max_concurrency=3, requests_per_s=10_000.0, use_limit_headers=False)
    )
    active = peak = 0

    async def call() -> None:
        nonlocal active, peak
        ticket = await ctl.aacquire(tokens=10)
        active += 1
        peak = max(peak, active)
        await asyncio.sleep(0.005)
        active -= 1
        ctl.release(ticket)

    await asyncio.gather(*(call() for _ in range(20)))
    assert peak == 3
    assert ctl.state().in_flight == 0
    assert ctl.state().samples == 20


def test_blocking_acquire_in_threads_never_exceeds_the_limit() -> None:
    import threading
    import time

    ctl = BackpressureController(
        BackpressureConfig(max_concurrency=2, requests_per_s=10_000.0, use_limit_headers=False)
    )
    lock = threading.Lock()
    active = peak = 0

    def call() -> None:
        nonlocal active, peak
        ticket = ctl.acquire(tokens=5)
        with lock:
            active += 1
            peak = max(peak, active)
        time.sleep(0.005)
        with lock:
            active -= 1
        ctl.release(ticket)

    threads = [threading.Thread(target=call) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert peak == 2


def test_a_second_refusal_measures_the_capacity_admitted_between_the_two() -> None:
    clock = FakeClock()
    ctl = make(clock, requests_per_s=40.0, max_concurrency=64, burst_s=0.0, min_measure_s=0.4)
    sends: list[tuple[float, bool]] = []  # (sent at, refused)
    cut_to = []
    while ctl.pace.capacity is None and len(sends) < 200:
        ticket = ctl.request()
        while (wait := ctl.poll(ticket)) > 0:
            clock.advance(wait)
        refused = len(sends) % 3 != 1  # the provider admits one request in three
        sends.append((clock.now, refused))
        clock.advance(0.002 if refused else 0.05)  # a refusal comes back at once
        cuts = ctl.state().rate_cuts
        ctl.release(ticket, error=rate_limit_error(0.001) if refused else None)
        if ctl.state().rate_cuts > cuts:
            cut_to.append(ctl.state().rate_per_s)
    assert cut_to[0] == pytest.approx(0.85 * 40.0)  # step 1: the usual backoff
    assert cut_to[1] == pytest.approx(0.7 * cut_to[0])  # refused again while measuring
    first = sends[0][0]
    last = sends[-1][0]  # the refusal that completed the measurement
    assert last - first >= 0.4
    admitted = sum(1 for at, refused in sends if first < at < last and not refused)
    capacity = ctl.pace.capacity
    assert capacity is not None
    assert capacity == pytest.approx(admitted / (last - first))
    assert ctl.state().rate_per_s == pytest.approx(0.97 * capacity)  # what it admits, not our cut
