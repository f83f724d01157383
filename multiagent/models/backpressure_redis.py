"""The adaptive backpressure controller shared by every process through Redis.

One provider rate limit, many processes (on one or many machines): each process paced alone to
the provider's limit would together exceed it. Here the controller's state for a (provider,
base URL, model) lives in Redis and changes only through Lua scripts (``_bp_redis_lua``), on
the server's clock:

- **one call to send**: ``ACQUIRE`` takes a slot (a *lease* in a sorted set, scored by its
  deadline), books the request's place in the shared GCRA schedule (requests and tokens) and
  answers "go", "wait until T" or "no slot". A waiter sleeps until T (then asks again: the
  booking is checked against the shared pause and the pace's epoch) or until a slot is freed
  (``PUBLISH`` from ``RELEASE`` while some process waits for a slot, read by this process's
  keeper thread, which wakes one waiter);
- **one call to finish**: ``RELEASE`` gives the lease back and records the outcome; a 429's
  Retry-After / ``retry-after-ms`` / ``x-ratelimit-reset-*`` moves the endpoint's gate key, so
  no process on any machine sends before the announced time;
- **decisions** (a 429's cut, an advertised limit, the tick's probe and AIMD step) are the
  in-process algorithm run on a snapshot and written with a compare-and-set on a version
  (:mod:`multiagent.models._bp_redis_decide`): one overload cuts once across all processes;
- **leases expire**: the keeper renews this process's leases every third of ``lease_s``; a
  process that dies gives its slots back within ``lease_s`` seconds.

If Redis goes away mid-run, the process limits itself alone (an in-process
:class:`BackpressureController` at ``fallback_fraction`` of the last shared pace and limit,
divided by the processes last seen), says so once on stderr, and rejoins when Redis answers
again. Tickets keep the controller that admitted them, so none is lost or freed twice.

The code is in private modules: :mod:`~multiagent.models._bp_redis_controller` (the calls),
:mod:`~multiagent.models._bp_redis_keeper` (the Redis state, keeper thread and fallback),
:mod:`~multiagent.models._bp_redis_registry` (the client and the per-process registry),
:mod:`~multiagent.models._bp_redis_lua`, :mod:`~multiagent.models._bp_redis_decide` and
:mod:`~multiagent.models._bp_redis_state`.
"""

from __future__ import annotations

from multiagent.models._bp_redis_controller import RedisBackpressureController
from multiagent.models._bp_redis_keeper import SharedTicket
from multiagent.models._bp_redis_registry import connect, shared_redis_controller
from multiagent.models._bp_redis_state import SharedBackpressureState

__all__ = [
    "RedisBackpressureController",
    "SharedBackpressureState",
    "SharedTicket",
    "connect",
    "shared_redis_controller",
]
