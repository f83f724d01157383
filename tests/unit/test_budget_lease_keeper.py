"""The keeper of budget leases: every hold renewed in one call per period, none after it is
dropped, a failing store tried again, and the thread gone once nothing is held."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from multiagent.models import _budget_leases
from multiagent.models._budget_leases import LeaseKeeper
from multiagent.policies import load_settings


def _until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 60  # only stops a test that would hang
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_each_renewal_covers_every_hold_and_drops_are_not_renewed() -> None:
    calls: list[dict[str, float]] = []
    keeper: LeaseKeeper[str] = LeaseKeeper(lambda held: calls.append(dict(held)), name="t")
    for key in ("a", "b", "c"):
        keeper.hold(key, 0.3)
    _until(lambda: len(calls) >= 2)
    assert all(call == {"a": 0.3, "b": 0.3, "c": 0.3} for call in calls[:2])
    keeper.drop(["a", "b", "unknown"])
    seen = len(calls)
    _until(lambda: len(calls) >= seen + 2)
    assert calls[-1] == {"c": 0.3}


def test_a_shorter_lease_shortens_the_period_at_once() -> None:
    renewed = threading.Event()
    keeper: LeaseKeeper[str] = LeaseKeeper(lambda held: renewed.set(), name="t")
    keeper.hold("long", 3600.0)  # renewed every 20 minutes
    keeper.hold("short", 0.3)  # ...until a hold of 0.3 s needs one every 0.1 s
    assert renewed.wait(60)


def test_a_failing_store_is_tried_again_and_the_keeper_ends_when_idle(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_budget_leases, "IDLE_S", 0.2)
    attempts: list[int] = []

    def renew(held: list[tuple[str, float]]) -> None:
        attempts.append(len(held))
        if len(attempts) == 1:
            raise ConnectionError("store away")

    keeper: LeaseKeeper[str] = LeaseKeeper(renew, name="t")
    keeper.hold("a", 0.3)
    _until(lambda: keeper.renewals >= 1)  # renewed after the failed try
    assert len(attempts) >= 2
    thread = keeper._thread
    assert thread is not None
    keeper.drop(["a"])
    thread.join(timeout=60)
    assert not thread.is_alive()
    keeper.hold("b", 0.3)  # a new hold starts the keeper again
    seen = keeper.renewals
    _until(lambda: keeper.renewals > seen)


def test_the_budget_lease_setting_is_short_by_default_and_at_least_a_second() -> None:
    assert load_settings().profile.budget.lease_s == 30.0
    with pytest.raises(Exception, match="lease_s"):
        load_settings(overrides={"budget.lease_s": 0.5})
