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
    after_s: Sequence[float] = (3.0,),
) -> tuple[LoadResult, BackpressureController]:
    made: list[BackpressureController] = []

    def make(clock: Callable[[], float]) -> BackpressureController:
        made.append(
            BackpressureController(BackpressureConfig.from_profile(RATE_LIMIT), clock=clock)
        )
        return made[0]

    return drive(make, phases, headers=headers, after_s=after_s), made[0]


def test_blind_ramp_up_reaches_a_capacity_above_the_profiles_rate() -> None:
    result, ctl = run([LoadPhase("steady", 15, 20.0)])
    assert RATE_LIMIT.requests_per_minute / 60 < 17  # the profile starts it below capacity
    assert result.goodput(0, after_s=3.0) >= 0.95
    assert result.share_429(0) <= 0.02
    assert result.counts[0].early == 0
    assert ctl.state().rate_per_s > 17


def test_a_capacity_cut_costs_two_refusals_and_probing_backs_off_while_it_holds() -> None:
    # the cut is met by one refusal (it fell) and one more where the pace meets it again
    # (measured); then, the ceiling holding, probes are spaced 1 / (1% x 8 req/s) = 12.5 s apart
    phases = [LoadPhase("base", 15, 20.0), LoadPhase("cut", 30, 8.0)]
    result, ctl = run(phases)
    assert ctl.pace.capacity == pytest.approx(8.0, rel=0.05)
    assert result.goodput(1, after_s=3.0) >= 0.95
    assert result.counts[1].rate_limited <= 4  # 2 to find it, 2 probes in 27 s
    assert ctl.pace.probe_wait == pytest.approx(12.5, rel=0.06)
    assert [c.early for c in result.counts] == [0, 0]


def test_a_raise_after_a_long_hold_is_found_within_the_longest_probe_wait() -> None:
    longest = 1 / (BackpressureConfig().probe_share * 8.0)  # 12.5 s at 8 req/s
    phases = [LoadPhase("base", 10, 20.0), LoadPhase("cut", 15, 8.0), LoadPhase("back", 30, 20.0)]
    result, _ = run(phases, after_s=(3.0, longest + 3.0))
    assert result.goodput(1, after_s=3.0) >= 0.93  # this cut came in the middle of a probe
    assert result.goodput(2, after_s=longest + 3.0) >= 0.95
    assert result.share_429(1) <= 0.03
    for count in result.counts:
        assert count.early == 0
        assert count.tasks_failed == 0


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
