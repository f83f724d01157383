"""The simulator's opt-in event log: each Retry-After and early arrival, by request id."""

from __future__ import annotations

import pytest

from multiagent.sim.state import Refused
from multiagent.sim.stats import SimEvent
from tests.unit._sim_clock import ManualClock, sim_state


def test_each_retry_after_and_early_arrival_is_logged_with_its_request() -> None:
    clock = ManualClock()
    state = sim_state(clock, rpm=60, limit_headers=False, event_log=True)  # one request/s
    state.admit(cost_tokens=10, pieces=1, request_id="a")
    clock.now += 0.25
    refused = state.admit(cost_tokens=10, pieces=1, request_id="b")
    assert isinstance(refused, Refused)
    assert refused.headers["retry-after-ms"] == "750"
    clock.now += 0.5  # before b's deadline: early, and refused again (0.25 s left)
    assert isinstance(state.admit(cost_tokens=10, pieces=1, request_id="c"), Refused)
    clock.now += 0.25  # exactly at both deadlines: neither early nor refused
    state.admit(cost_tokens=10, pieces=1)
    assert state.events() == [
        SimEvent("retry_after", "b", at=1e9 + 0.25, deadline=1e9 + 1.0),
        SimEvent("early", "c", at=1e9 + 0.75, deadline=1e9 + 1.0),
        SimEvent("retry_after", "c", at=1e9 + 0.75, deadline=1e9 + 1.0),
    ]
    assert state.snapshot()["totals"]["early"] == 1  # the counter is unchanged by the log
    state.reset()
    assert state.events() == []


@pytest.mark.parametrize("event_log", [False, True])
def test_the_log_is_opt_in_and_never_changes_the_counts(event_log: bool) -> None:
    clock = ManualClock()
    state = sim_state(clock, rpm=60, event_log=event_log)
    for _ in range(3):
        state.admit(cost_tokens=10, pieces=1, request_id="same")
    totals = state.snapshot()["totals"]
    assert (totals["attempts"], totals["rate_limited"], totals["early"]) == (3, 2, 1)
    assert len(state.events()) == (3 if event_log else 0)
