"""A hand-moved clock and the simulator's state on it, for the simulator's unit tests."""

from __future__ import annotations

from multiagent.sim.config import SimServerConfig
from multiagent.sim.state import SimState


class ManualClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def sim_state(clock: ManualClock, **values: object) -> SimState:
    """The simulator's state under ``values``, on ``clock``; the wall clock reads 1e9 at the
    start, so a moment m of the manual clock is 1e9 + (m - 100) in epoch seconds."""
    return SimState(SimServerConfig.model_validate(values), clock=clock, wall=lambda: 1e9)
