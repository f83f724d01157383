"""The shared controller's Lua scripts against a real redis-server."""

from __future__ import annotations

import pytest
import redis

from multiagent.models._bp_redis_decide import initial_fields, parse_snapshot
from multiagent.models._bp_redis_lua import ACQUIRE, APPLY, INIT, RELEASE, SNAPSHOT, keys_for
from multiagent.models.backpressure import BackpressureConfig

pytestmark = pytest.mark.redis
K = keys_for("lua:t", endpoint_key="lua:e")


@pytest.fixture
def client(redis_url: str) -> redis.Redis:
    return redis.Redis.from_url(redis_url, decode_responses=True)


def _acquire(
    client: redis.Redis, lease: str, *, proc: str = "p", still_wanting: bool = False
) -> list[str]:
    keys = [K.state, K.leases, K.gate, K.sends, K.procs, K.want]
    args = [lease, 1, 5.0, proc, "", -1, 0.5, 15.0, int(still_wanting)]
    return list(client.eval(ACQUIRE, 6, *keys, *args))


def _release(client: redis.Redis, lease: str, kind: str = "ok", wait: str = "") -> list[str]:
    keys = [K.state, K.leases, K.gate, K.answers, K.refused, K.sends, K.want]
    return list(client.eval(RELEASE, 7, *keys, lease, kind, "0", 0, wait, 10.0, K.channel, 1.0))


def _init(client: redis.Redis, **fields: float) -> None:
    values = initial_fields(BackpressureConfig(max_concurrency=2, requests_per_s=1000.0))
    values.update({k: repr(v) for k, v in fields.items()})
    client.eval(INIT, 2, K.state, K.gate, *[x for pair in values.items() for x in pair])


def test_acquire_asks_for_init_then_admits_up_to_the_limit(client: redis.Redis) -> None:
    assert _acquire(client, "p#0")[0] == "init"
    _init(client)
    verdicts = [_acquire(client, f"p#{i}")[0] for i in range(3)]
    assert verdicts[0] == "go"
    assert verdicts[1] in ("go", "wait")  # paced 1 ms after the first (no burst at the start)
    assert verdicts[2] == "slot"
    assert client.zcard(K.leases) == 2
    assert client.hget(K.state, "f_sat") == "1"


def test_release_frees_the_slot_and_a_429_sets_the_gate(client: redis.Redis) -> None:
    _init(client, limit=1.0)
    assert _acquire(client, "p#0")[0] == "go"
    now, *_rest, removed = _release(client, "p#0", "rate_limit", "2.5")
    assert removed == 1
    assert float(client.get(K.gate) or 0) == pytest.approx(float(now) + 2.5)
    verdict, due, *_ = _acquire(client, "p#1")
    assert verdict == "wait"
    assert float(due) == pytest.approx(float(now) + 2.5)
    assert client.hget(K.state, "r429") == "1"


def test_a_freed_slot_is_announced_only_while_a_process_wants_one(client: redis.Redis) -> None:
    """Nobody waiting: a release publishes nothing (every process's keeper would wake for every
    call otherwise). A refused request puts its process in ``want``; it stays there while other
    requests of it still wait, so each freed slot is announced until the last is served."""
    _init(client, limit=1.0)
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(K.channel)

    def announced() -> int:
        """Slots announced since the last look: read up to a marker published after them
        (Redis delivers a channel's messages in the order they were published)."""
        client.publish(K.channel, "mark")
        count = 0
        for _ in range(1000):  # None: nothing yet, or the subscription's own confirmation
            message = pubsub.get_message(timeout=0.1)
            if message is None:
                continue
            if message["data"] == "mark":
                return count
            count += 1
        raise AssertionError("the marker never arrived")

    assert _acquire(client, "p#0")[0] == "go"
    _release(client, "p#0")
    assert announced() == 0
    assert _acquire(client, "p#1")[0] != "slot"  # go, or wait for the pace: it holds the slot
    assert _acquire(client, "p#2")[0] == "slot"  # two requests of p wait for the one slot
    assert _acquire(client, "p#3")[0] == "slot"
    _release(client, "p#1")
    assert announced() == 1
    assert _acquire(client, "p#2", still_wanting=True)[0] != "slot"  # p#3 still waits
    _release(client, "p#2")
    assert announced() == 1
    assert _acquire(client, "p#3")[0] != "slot"  # the last waiter: p leaves ``want``
    _release(client, "p#3")
    assert announced() == 0
    pubsub.close()


def test_apply_is_a_compare_and_set_on_the_version(client: redis.Redis) -> None:
    _init(client)
    assert client.eval(APPLY, 2, K.state, K.gate, "0", 1, "", "rate", "5.0") == 1
    assert client.eval(APPLY, 2, K.state, K.gate, "0", 1, "", "rate", "1.0") == 0  # stale
    assert client.hget(K.state, "rate") == "5.0"
    assert client.hget(K.state, "epoch") == "1"  # the first decision voided booked slots


def test_expired_leases_are_dropped(client: redis.Redis) -> None:
    _init(client, limit=1.0)
    client.zadd(K.leases, {"dead#0": 1.0})  # a lease whose deadline passed long ago
    assert _acquire(client, "p#0")[0] == "go"
    snap = parse_snapshot(list(client.eval(SNAPSHOT, 4, K.state, K.gate, K.leases, K.procs, 15)))
    assert [member for member, _ in snap.leases] == ["p#0"]


def test_a_new_state_grants_no_burst(client: redis.Redis) -> None:
    """The first sends of a pace nobody has confirmed are spaced: an idle start's burst at a
    guessed pace far above the capacity empties the provider's bucket back to back, and the
    sends in the few ms before its first 429 reaches Redis arrive during the Retry-After."""
    _init(client, rate=1.0)
    first = _acquire(client, "p#0")
    assert first[0] == "go"
    verdict, due, *_ = _acquire(client, "p#1")
    assert verdict == "wait"
    assert float(due) == pytest.approx(float(first[4]) + 1.0, abs=0.05)


def test_burst_credit_granted_later_accrues_from_then(client: redis.Redis) -> None:
    """A decision that confirms the pace grants burst credit for idle time from then on, none
    at once (the sends already due keep their spacing)."""
    _init(client, rate=1.0)
    first = _acquire(client, "p#0")
    assert first[0] == "go"
    assert client.eval(APPLY, 2, K.state, K.gate, "0", 0, "", "burst", "1.0") == 1
    verdict, due, *_ = _acquire(client, "p#1")
    assert verdict == "wait"
    assert float(due) == pytest.approx(float(first[4]) + 1.0, abs=0.05)


def test_a_process_below_its_share_gets_the_freed_slot(client: redis.Redis) -> None:
    """Two processes, four slots: while b waits, a (holding its two) is refused the slot that
    frees; b gets it, and a gets the next when nobody else waits."""
    _init(client, limit=4.0)
    client.zadd(K.procs, {"a": float(client.time()[0]), "b": float(client.time()[0])})
    held = [_acquire(client, f"a#{i}", proc="a")[0] for i in range(4)]
    assert "slot" not in held  # go, or wait for the pace: each holds a slot
    assert _acquire(client, "b#0", proc="b")[0] == "slot"  # all four are a's
    client.zrem(K.leases, "a#0")  # one of a's requests ends
    assert _acquire(client, "a#4", proc="a")[0] == "slot"  # b waits and a holds its share
    assert _acquire(client, "b#0", proc="b")[0] != "slot"
    client.zrem(K.leases, "a#1")
    assert _acquire(client, "a#5", proc="a")[0] != "slot"  # b was served


def test_the_pace_is_confirmed_by_an_advertised_limit_or_a_probe(client: redis.Redis) -> None:
    """Burst credit follows a confirmation: an advertised limit, or the first probe upward."""
    from multiagent.models import _bp_redis_decide as decide
    from multiagent.models._window import OutcomeWindow

    config = BackpressureConfig(max_concurrency=2, requests_per_s=10.0)
    fields = initial_fields(config)
    assert fields["burst"] == "0"
    snap = decide.Snapshot(now=100.0, gate=0.0, processes=1, fields=fields, leases=[])
    advertised = decide.on_advertised(snap, config, rps=20.0, tps=None, rtt=0.1)
    assert advertised is not None
    assert advertised.fields["burst"] == repr(config.burst_s)
    bound = {**fields, "start": "0", "lasttick": "0", "f_pb": "1"}
    snap = decide.Snapshot(now=100.0, gate=0.0, processes=1, fields=bound, leases=[])
    tick = decide.on_tick(snap, config, local=OutcomeWindow(span_s=config.window_s))
    assert tick is not None
    assert tick.fields["burst"] == repr(config.burst_s)
