"""Settlements kept until sent to a Redis budget: what failed to go goes first next time."""

from __future__ import annotations

from multiagent.models._budget_pending import PendingSettlements


def _settlement(key: str) -> tuple[str, str, str, int]:
    return (key, "base", key, 1)


def test_settlements_that_failed_to_go_are_sent_before_those_kept_since() -> None:
    pending = PendingSettlements(flush=lambda: None)
    try:
        pending.add(_settlement("hold>draw1"))
        pending.add(_settlement("hold>draw2"))
        taken = pending.take()
        pending.add(_settlement("hold>"))  # the item ended: its hold's close, after its draws
        pending.restore(taken)  # the send failed
        # the draws first: a close sent ahead of them would free room they then spend again
        assert [s[0] for s in pending.take(limit=2)] == ["hold>draw1", "hold>draw2"]
        assert [s[0] for s in pending.take()] == ["hold>"]
    finally:
        pending.close()


def test_a_newer_settlement_of_a_reservation_wins_over_the_one_restored() -> None:
    pending = PendingSettlements(flush=lambda: None)
    try:
        pending.add(("r1", "base", "r1", 5))
        taken = pending.take()
        pending.add(("r1", "base", "r1", 7))
        pending.restore(taken)
        assert pending.take() == [("r1", "base", "r1", 7)]
    finally:
        pending.close()
