"""The controller against a provider that advertises no limits, on a fake clock.

:func:`multiagent.sim.fakeload.drive` runs 32 agent loops through the controller against a model
of the simulator (its token bucket, one second of burst, Retry-After on every 429); time is
simulated, so every count below is exact and the same on every machine. Each controller starts
from the ``dev_balanced`` profile's ``rate_limit`` section (16.7 req/s, 6 concurrent), knowing
nothing of the schedule.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import pytest

from multiagent.models.backpressure import BackpressureConfig, BackpressureController
from multiagent.policies import load_settings
from multiagent.sim.fakeload import LoadPhase, LoadResult, drive

RATE_LIMIT = load_settings(env="dev_balanced").profile.rate_limit


def run(
    phases: Sequence[LoadPhase],
    *,
    headers: Callable[[LoadPhase], Mapping[str, str] | None] = lambda _: None,
) -> tuple[LoadResult, BackpressureController]:
    made: list[BackpressureController] = []

    def make(clock: Callable[[], float]) -> BackpressureController:
        made.append(
            BackpressureController(BackpressureConfig.from_profile(RATE_LIMIT), clock=clock)
        )
        return made[0]

    return drive(make, phases, headers=headers), made[0]


def test_blind_ramp_up_reaches_a_capacity_above_the_profiles_rate() -> None:
    result, ctl = run([LoadPhase("steady", 15, 20.0)])
    assert RATE_LIMIT.requests_per_minute / 60 < 17  # the profile starts it below capacity
    assert result.goodput(0, after_s=3.0) >= 0.95
    assert result.share_429(0) <= 0.02
    assert result.counts[0].early == 0
    assert ctl.state().rate_per_s > 17


def test_a_capacity_cut_is_measured_and_followed_then_a_raise_found() -> None:
    phases = [LoadPhase("base", 10, 20.0), LoadPhase("cut", 15, 8.0), LoadPhase("back", 15, 20.0)]
    result, ctl = run(phases)
    assert ctl.pace.capacity is not None
    for index in range(3):
        assert result.goodput(index, after_s=3.0) >= 0.95, phases[index].name
        assert result.counts[index].early == 0
        assert result.counts[index].tasks_failed == 0
    # the cut was measured between refusals, not guessed from the old rate
    assert sum(c.rate_limited for c in result.counts) <= 0.04 * sum(
        c.attempts for c in result.counts
    )


def test_five_percent_server_errors_are_not_taken_for_overload() -> None:
    clean, _ = run([LoadPhase("clean", 15, 20.0)])
    failing, ctl = run([LoadPhase("failing", 15, 20.0, error_rate=0.05)])
    assert failing.counts[0].errors > 0
    assert failing.goodput(0, after_s=3.0) >= 0.95
    assert failing.goodput(0, after_s=3.0) >= clean.goodput(0, after_s=3.0) - 0.05
    assert ctl.state().limit_cuts == 0
    assert failing.share_429(0) <= 0.02


def test_no_request_leaves_during_a_retry_after() -> None:
    phases = [LoadPhase("base", 5, 20.0), LoadPhase("cut", 10, 4.0)]
    result, ctl = run(phases)
    assert sum(c.rate_limited for c in result.counts) > 0  # there were pauses to respect
    assert ctl.state().time_paused_s > 0
    assert [c.early for c in result.counts] == [0, 0]


def test_a_provider_that_queues_past_its_slots_is_met_by_the_limit() -> None:
    # 4 slots of 0.2 s: 20 answers/s at most, and more in flight only waits in its queue
    phases = [LoadPhase("queueing", 15, 1000.0, rtt_s=0.2, max_concurrency=4)]
    result, _ = run(phases)
    assert result.goodput(0, after_s=3.0) >= 0.95
    assert result.counts[0].rate_limited == 0


def test_a_slower_provider_gets_more_in_flight_than_the_profile_allows() -> None:
    phases = [LoadPhase("fast", 10, 20.0), LoadPhase("slow", 15, 20.0, rtt_s=0.56)]
    result, ctl = run(phases)
    assert result.goodput(1, after_s=3.0) >= 0.95  # 6 slots would carry 10.7 req/s
    assert ctl.state().limit > RATE_LIMIT.max_concurrency


@pytest.mark.parametrize("cut", [8.0, 10.0])
def test_advertised_limits_still_meet_their_targets_from_the_profile(cut: float) -> None:
    phases = [LoadPhase("base", 10, 20.0), LoadPhase("cut", 10, cut), LoadPhase("raise", 10, 30.0)]

    def advertised(phase: LoadPhase) -> dict[str, str]:
        return {"x-ratelimit-limit-requests": f"{phase.requests_per_s * 60:g}"}

    result, ctl = run(phases, headers=advertised)
    assert ctl.state().advertised_requests_per_s == 30.0
    for index in range(3):
        assert result.goodput(index) >= 0.95
        assert result.counts[index].rate_limited == 0
