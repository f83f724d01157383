"""Overload read from latency per output token, relative to the model's own: a fake clock drives
a model that writes at a steady pace (slow calls, constant seconds per token) and one that
serves one request at a time (seconds per token rise with the queue)."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable

import pytest
from langchain_core.messages import AIMessage, AIMessageChunk

from multiagent.models._bp_health import (
    TokenLatency,
    output_tokens_of,
    served_seconds,
    settled_limit,
)
from multiagent.models.backpressure import BackpressureConfig, BackpressureController, Ticket

PREFILL_S = 0.2
PER_TOKEN_S = 0.025  # 40 tokens/s, as the packaged SmolLM2 on two busy cores


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(clock: FakeClock, *, cap: int = 8, rate: float = 1e6) -> BackpressureController:
    config = BackpressureConfig(
        max_concurrency=8,
        concurrency_cap=cap,
        requests_per_s=rate,
        min_samples=10,
        use_limit_headers=False,
        rtt_threshold_s=5.0,
    )
    return BackpressureController(config, clock=clock)


def serve(
    ctl: BackpressureController,
    clock: FakeClock,
    *,
    serial: bool,
    answers: int,
    lengths: Iterable[int],
    report_tokens: bool = True,
    client_lag_s: float = 0.0,
    report_served: bool = False,
    cold_s: float = 0.0,
) -> list[int]:
    """Keep the controller's limit of requests in flight; return how many were in flight at
    each answer. A serial model starts a request when the previous one is done. A client that
    lags reads each answer ``client_lag_s`` late per other call it has out (its own CPU),
    ``report_served`` passes on the server's own time for each answer, and the first request
    takes ``cold_s`` more (a cold server reading the prompt for the first time)."""
    sizes = itertools.cycle(lengths)
    pending: list[tuple[float, Ticket, int]] = []
    free_at = clock.now
    in_flight: list[int] = []
    for _ in range(answers):
        while True:
            ticket = ctl.request()
            wait = ctl.poll(ticket)
            if wait != 0:
                ctl.cancel(ticket)
                break
            tokens = next(sizes)
            start = max(clock.now, free_at) if serial else clock.now
            finish = start + PREFILL_S + tokens * PER_TOKEN_S + cold_s
            cold_s = 0.0
            free_at = finish if serial else free_at
            pending.append((finish + client_lag_s * len(pending), ticket, tokens))
        pending.sort(key=lambda item: item[0])
        in_flight.append(len(pending))
        finish, ticket, tokens = pending.pop(0)
        clock.now = max(clock.now, finish)
        served = PREFILL_S + tokens * PER_TOKEN_S if report_served else None
        ctl.release(ticket, output_tokens=tokens if report_tokens else None, served_s=served)
    return in_flight


LONG_AND_SHORT = (20, 400, 60, 200, 120)  # 0.7 s to 10.2 s a call, same pace per token


def test_a_slow_but_steady_model_is_not_read_as_overloaded() -> None:
    clock = FakeClock()
    ctl = make(clock)
    serve(ctl, clock, serial=False, answers=120, lengths=LONG_AND_SHORT)
    state = ctl.state()
    assert state.rtt_p95_s is not None
    assert state.rtt_p95_s > 5.0  # above the absolute threshold
    assert state.limit_cuts == 0
    assert state.limit == 8


def test_the_same_round_trips_without_token_counts_fall_back_to_the_rtt_threshold() -> None:
    clock = FakeClock()
    ctl = make(clock)
    serve(ctl, clock, serial=False, answers=120, lengths=LONG_AND_SHORT, report_tokens=False)
    assert ctl.state().limit_cuts >= 1


@pytest.mark.parametrize(
    ("cap", "rate"),
    [(8, 1e6), (256, 1000 / 60)],  # the second: a profile's pace, Little's-law floor free
)
def test_rising_latency_per_token_cuts_the_limit_to_what_the_model_serves(
    cap: int, rate: float
) -> None:
    clock = FakeClock()
    ctl = make(clock, cap=cap, rate=rate)
    in_flight = serve(ctl, clock, serial=True, answers=60, lengths=(50,))
    state = ctl.state()
    assert in_flight[0] == 8  # it started with the profile's 8 in flight
    assert state.limit_cuts >= 1
    # one request at a time is what this model serves: the limit settles at 1-2 in flight
    assert max(in_flight[-20:]) <= 2
    assert state.limit <= 2


@pytest.mark.parametrize("lengths", [(50,), (20, 96, 30)])
def test_a_cold_first_answer_does_not_hide_the_queue_of_a_one_at_a_time_model(
    lengths: tuple[int, ...],
) -> None:
    # the first wave goes out together; the first answer also carries a cold server's reading
    # of the prompt (llama.cpp's prefix cache was empty), 8 times a warm call: no answer the
    # controller has seen took what this model takes unloaded, so it needs one alone
    clock = FakeClock()
    ctl = make(clock, cap=256, rate=1000 / 60)
    in_flight = serve(ctl, clock, serial=True, answers=60, lengths=lengths, cold_s=10.0)
    state = ctl.state()
    assert in_flight[0] == 8
    assert min(in_flight) == 1  # the answer taken alone
    # one at a time: 1-2 in flight, up to 3 where the lengths differ (it grows, and cuts again)
    settled = 2 if len(lengths) == 1 else 3
    assert max(in_flight[-20:]) <= settled
    assert state.limit <= settled


def test_a_parallel_model_measured_alone_once_regains_its_limit() -> None:
    # the same cold first answer at a model that serves everything in parallel: the one answer
    # taken alone finds no queue, and the limit is back where it was
    clock = FakeClock()
    ctl = make(clock)
    in_flight = serve(ctl, clock, serial=False, answers=120, lengths=(50,), cold_s=10.0)
    state = ctl.state()
    assert state.limit_cuts == 0
    assert state.limit == 8
    assert min(in_flight[-60:]) == 8


def test_growth_waits_for_an_answer_that_ran_alone() -> None:
    # the rule both the in-process and the Redis-shared controllers apply at a healthy tick
    config = BackpressureConfig(max_concurrency=6)
    latency = TokenLatency()
    latency.add(sent_at=0.0, rtt_s=9.0, output_tokens=20)  # sent beside five others
    assert settled_limit(6.0, 12.0, latency, config, now=1.0, reached=False) == 6.0
    assert latency.probe_restore is None  # a limit nobody filled is neither grown nor probed
    assert settled_limit(6.0, 12.0, latency, config, now=2.0, reached=True) == 1.0
    assert latency.probe_restore == 6.0
    assert settled_limit(1.0, 2.0, latency, config, now=3.0, reached=True) == 1.0  # still out
    latency.add(sent_at=3.0, rtt_s=1.5, output_tokens=20, alone=True)
    # the answers before waited 3.5 times what one alone takes (the median of 6 and 1): the
    # limit returns cut as a tick would have cut it, by 1 / 3.5, not into the queue again
    assert settled_limit(1.0, 2.0, latency, config, now=4.5, reached=True) == pytest.approx(
        6.0 / 3.5
    )
    assert latency.probe_restore is None
    assert math.isnan(latency.rise(min_samples=1))  # judged on answers sent from now on
    assert settled_limit(2.0, 4.0, latency, config, now=9.0, reached=True) == 4.0


def test_a_probe_that_finds_no_queue_gives_the_whole_limit_back() -> None:
    config = BackpressureConfig(max_concurrency=6)
    latency = TokenLatency()
    for rtt in (1.6, 1.7, 1.6):  # beside each other, and no slower than one alone
        latency.add(sent_at=0.0, rtt_s=rtt, output_tokens=20)
    assert settled_limit(6.0, 12.0, latency, config, now=2.0, reached=True) == 1.0
    latency.add(sent_at=3.0, rtt_s=1.5, output_tokens=20, alone=True)
    assert settled_limit(1.0, 2.0, latency, config, now=4.5, reached=True) == 6.0


def test_a_floor_of_two_slots_leaves_no_answer_alone_and_no_probe() -> None:
    floor = BackpressureConfig(max_concurrency=6, min_concurrency=2)
    queued = TokenLatency()
    queued.add(sent_at=0.0, rtt_s=9.0, output_tokens=20)
    assert settled_limit(6.0, 12.0, queued, floor, now=1.0, reached=True) == 12.0
    assert queued.probe_restore is None


@pytest.mark.parametrize("report_served", [True, False])
def test_a_client_reading_answers_late_is_not_the_providers_queue_when_the_server_times_them(
    report_served: bool,
) -> None:
    # a worker busy preparing calls reads answers late, more so the more it has out: its round
    # trips rise with the calls in flight as a queue's would; the server's own time does not
    clock = FakeClock()
    ctl = make(clock)
    serve(ctl, clock, serial=False, answers=200, lengths=(50,), client_lag_s=0.6,
          report_served=report_served)  # fmt: skip
    state = ctl.state()
    if report_served:
        assert state.limit_cuts == 0
        assert state.limit == 8
    else:  # judged on the round trip, the same lag reads as overload
        assert state.limit_cuts >= 1
        assert state.limit < 8


def test_the_servers_own_time_is_read_from_openais_processing_header() -> None:
    assert served_seconds({"openai-processing-ms": "57"}) == 0.057
    assert served_seconds({"openai-processing-ms": "soon"}) is None
    assert served_seconds({"openai-processing-ms": "-3"}) is None
    assert served_seconds({}) is None
    assert served_seconds(None) is None


def test_token_latency_rise_is_relative_to_the_models_own_pace() -> None:
    latency = TokenLatency()
    for _ in range(10):
        latency.add(sent_at=0.0, rtt_s=4.0, output_tokens=100)  # slow: 4 s a call
    assert latency.rise(min_samples=4) == 1.0
    latency.judged(at=1.0)
    assert math.isnan(latency.rise(min_samples=4))  # judged on answers after the judgement
    for _ in range(4):
        latency.add(
            sent_at=2.0, rtt_s=12.0, output_tokens=100
        )  # three times its own seconds per token
    assert latency.rise(min_samples=4) == 3.0


def test_a_model_mostly_waiting_for_its_first_token_is_not_read_as_overloaded() -> None:
    # 50 ms whatever the length (a server whose latency is its time to first token): short
    # answers after long ones take more seconds per token, and that is no queue
    latency = TokenLatency()
    for tokens in (100, 5, 60, 8, 100, 12, 5, 40, 7, 9, 6, 5):
        latency.add(sent_at=0.0, rtt_s=0.05, output_tokens=tokens)
    assert latency.rise(min_samples=4) == 1.0
    latency.judged(at=1.0)
    for tokens in (5, 100, 7, 6):  # the same lengths, each now behind a queue twice as long
        latency.add(sent_at=2.0, rtt_s=0.15, output_tokens=tokens)
    assert latency.rise(min_samples=4) == pytest.approx(3.0)


def test_output_tokens_come_from_usage_else_from_the_chunks() -> None:
    answer = AIMessage(
        content="x", usage_metadata={"input_tokens": 5, "output_tokens": 7, "total_tokens": 12}
    )
    assert output_tokens_of([answer]) == 7
    chunks = [AIMessageChunk(content=piece) for piece in ("a", "b", "", "c")]
    assert output_tokens_of(chunks) == 3
    assert output_tokens_of([]) is None
