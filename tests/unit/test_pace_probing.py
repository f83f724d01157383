"""How often the blind pace probes above a measured capacity: backing off while it holds.

Driven directly with a real :class:`OutcomeWindow`: sends at the provider's capacity, a
refusal where the bucket is empty, and the pace's decisions read back.
"""

from __future__ import annotations

import pytest

from multiagent.models._bp_types import BackpressureConfig
from multiagent.models._pace import Pace
from multiagent.models._window import Outcome, OutcomeWindow

CONFIG = BackpressureConfig(requests_per_s=10.0)


def admit(window: OutcomeWindow, *, start: float, end: float, rate: float) -> None:
    """Sends admitted at ``rate`` from ``start`` (excluded) to ``end`` (excluded)."""
    count = round((end - start) * rate)
    for k in range(1, count):
        at = start + k / rate
        window.sent(at)
        window.add(Outcome(at=at + 0.1, rtt_s=0.1, kind="ok"))


def refuse(pace: Pace, window: OutcomeWindow, at: float) -> None:
    window.sent(at)
    window.add(Outcome(at=at + 0.002, rtt_s=0.002, kind="rate_limit"))
    pace.on_rate_limited(sent_at=at, now=at + 0.002, window=window)


def measured_at_8() -> tuple[Pace, OutcomeWindow]:
    """A pace that measured 8 req/s: refused at 0 s (its bucket empty) and again at 5 s."""
    window = OutcomeWindow(span_s=10.0, memory_s=60.0)
    pace = Pace(CONFIG, now=0.0)
    refuse(pace, window, 0.0)
    admit(window, start=0.0, end=5.0, rate=8.0)
    refuse(pace, window, 5.0)
    return pace, window


def probe(pace: Pace, *, start: float) -> float:
    """Grow once per tick from ``start`` until above the capacity; return when it was."""
    now = start
    assert pace.capacity is not None
    while pace.rate <= pace.capacity:
        now += CONFIG.tick_s
        pace.grow(now)
    return now


def test_probes_back_off_while_the_ceiling_holds_up_to_one_percent_of_attempts() -> None:
    pace, window = measured_at_8()
    assert pace.capacity == pytest.approx(8.0, rel=0.05)
    assert pace.rate == pytest.approx(CONFIG.settle * pace.capacity)
    waits = [pace.probe_wait]
    last = 5.0
    for _ in range(4):  # each probe finds the same ceiling
        early = last + pace.probe_wait - CONFIG.tick_s
        assert not pace.grow(early)  # no probe before the wait is over
        over = probe(pace, start=early)
        admit(window, start=last, end=over, rate=8.0)
        refuse(pace, window, over)
        last = over
        waits.append(pace.probe_wait)
    longest = 1 / (CONFIG.probe_share * 8.0)
    assert waits == pytest.approx([3.0, 6.0, 12.0, longest, longest], rel=0.06)


def test_a_moved_round_trip_brings_probing_back_at_once() -> None:
    pace, _window = measured_at_8()
    pace.probe_wait = 12.5  # as after a few probes that found the same ceiling
    pace.note_rtt(0.14, 6.0)
    pace.note_rtt(0.18, 7.0)  # within the shift: nothing changed
    assert pace.probe_wait == 12.5
    pace.note_rtt(0.56, 8.0)  # four times slower: the provider's load changed
    assert pace.probe_wait == CONFIG.hold_s
    assert pace.grow(5.002 + CONFIG.hold_s)


def test_more_admitted_than_the_capacity_allows_is_a_raise() -> None:
    pace, window = measured_at_8()
    admit(window, start=5.0, end=9.0, rate=12.0)  # the bucket, empty at 5 s, cannot hold this
    assert pace.grow(9.0, window)
    assert pace.capacity is None  # obsolete: the next refusals measure the new one
    assert pace.probe_wait == CONFIG.hold_s
