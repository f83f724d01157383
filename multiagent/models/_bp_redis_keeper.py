"""The shared controller's link to Redis: its state there, and the keeper thread beside callers.

:class:`SharedStateKeeper` is the base of
:class:`~multiagent.models.backpressure_redis.RedisBackpressureController`: it holds the
client, the keys and the scripts, reads the shared state (``SNAPSHOT``), writes decisions with
a compare-and-set (``APPLY``), and runs the keeper thread: it renews this process's leases
every third of ``lease_s``, runs the tick's decision once per ``tick_s`` (once across
processes), wakes one local waiter per freed slot (``PUBLISH`` on the controller's channel),
and, when Redis stops answering, switches the process to an in-process controller at
``fallback_fraction`` of the last shared limit (:meth:`SharedStateKeeper._lost`) until it
answers again (:meth:`SharedStateKeeper._try_rejoin`).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import secrets
import socket
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

import redis
from redis.exceptions import RedisError

from multiagent.models import _bp_redis_decide as decide
from multiagent.models._bp_redis_lua import (
    ACQUIRE,
    APPLY,
    INIT,
    RELEASE,
    RENEW,
    SNAPSHOT,
    keys_for,
)
from multiagent.models._bp_redis_state import fallback_config
from multiagent.models._bp_types import BackpressureConfig, Ticket
from multiagent.models._gate import ProviderGate
from multiagent.models.backpressure import BackpressureController

_log = logging.getLogger(__name__)
#: What a lost Redis raises (a refused or reset connection, a timeout).
LOST = (RedisError, OSError)


@dataclass(eq=False)
class SharedTicket(Ticket):
    """A ticket with its lease name; ``local`` is set when a fallback controller admitted it."""

    lease: str = ""
    local: Ticket | None = None
    local_controller: BackpressureController | None = None


class SharedStateKeeper(BackpressureController):
    """The Redis side of a shared controller: state, decisions, keeper thread and fallback.

    Args:
        config: Bounds and reflexes (every process should pass the same).
        client: A Redis client (``decode_responses=True``).
        key: The key prefix of this controller's state.
        endpoint_key: The prefix of the provider endpoint's pause (default: ``key``).
        clock_source: ``"redis"``: every decision reads the server's ``TIME``.
        labels: Metric labels.
        lease_s: Seconds a slot of a silent process stays taken.
        fallback_fraction: Share of the last shared limit the processes use together while
            Redis is away.
    """

    def __init__(
        self,
        config: BackpressureConfig | None = None,
        *,
        client: redis.Redis,
        key: str,
        endpoint_key: str | None = None,
        clock_source: Literal["redis"] = "redis",
        labels: Mapping[str, str] | None = None,
        lease_s: float = 5.0,
        fallback_fraction: float = 0.5,
    ) -> None:
        if clock_source != "redis":
            raise ValueError(f"clock_source {clock_source!r}: only 'redis' (server TIME) is valid")
        super().__init__(config, labels=labels)
        self._redis = client
        self.keys = keys_for(key, endpoint_key=endpoint_key or key)
        self.lease_s = lease_s
        self.fallback_fraction = fallback_fraction
        self.process_id = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self._scripts = {
            name: client.register_script(text)
            for name, text in (
                ("acquire", ACQUIRE),
                ("release", RELEASE),
                ("init", INIT),
                ("snapshot", SNAPSHOT),
                ("apply", APPLY),
                ("renew", RENEW),
            )
        }
        self._shared_window = decide.SharedWindow(client, self.keys, self._window)
        self._numbers = itertools.count()
        self._held: dict[str, SharedTicket] = {}
        self._wanting: set[str] = set()  # leases refused a slot that still wait for one
        self._mode_lock = threading.Lock()
        self._fallback: BackpressureController | None = None
        self.outages = 0
        self._last: decide.Snapshot | None = None
        self._stop = threading.Event()
        self._keeper = threading.Thread(target=self._keep, name="bp-redis-keeper", daemon=True)
        self._keeper.start()

    @property
    def shared(self) -> bool:
        """Whether the process currently limits through Redis (False: fallen back)."""
        return self._fallback is None

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._stop.is_set()

    def close(self) -> None:
        """Stop the keeper thread (leases still held expire on their own)."""
        self._stop.set()
        self._keeper.join(timeout=5.0)

    # -- shared state --------------------------------------------------------------------------

    def _snapshot(self) -> decide.Snapshot:
        keys = self.keys
        reply = self._scripts["snapshot"](
            keys=[keys.state, keys.gate, keys.leases, keys.procs], args=[3 * self.lease_s]
        )
        snap = decide.parse_snapshot(list(reply))
        if snap.fields:
            self._last = snap
        return snap

    def _decide(self, rule: Callable[[decide.Snapshot], decide.Decision | None]) -> None:
        """Apply ``rule``'s decision with a compare-and-set, reading again if another won."""
        for _ in range(5):
            snap = self._snapshot()
            if not snap.fields:
                return
            with self._lock:
                decision = rule(snap)
            if decision is None:
                return
            pairs = [item for pair in decision.fields.items() for item in pair]
            cap = "" if decision.tat_cap is None else repr(decision.tat_cap)
            rebook = 2 if decision.rebook and decision.spaced else int(decision.rebook)
            applied = self._scripts["apply"](
                keys=[self.keys.state, self.keys.gate],
                args=[snap.fields.get("v", "0"), rebook, cap, *pairs],
            )
            if applied:
                if decision.rebook:
                    with self._lock:
                        self._notify(rebooked=True)
                return

    def _init_state(self) -> None:
        last = self._last
        fields = decide.initial_fields(
            self.config,
            rate=None if last is None else last.num("rate"),
            limit=None if last is None else last.num("limit"),
        )
        pairs = [item for pair in fields.items() for item in pair]
        self._scripts["init"](keys=[self.keys.state, self.keys.gate], args=pairs)

    # -- the keeper: leases, ticks, wake-ups, fallback and rejoin ------------------------------

    def _keep(self) -> None:
        pubsub = None
        next_tick = next_renew = 0.0
        while not self._stop.is_set():
            if self._fallback is not None:
                pubsub = None
                if not self._stop.wait(1.0):
                    self._try_rejoin()
                continue
            try:
                if pubsub is None:
                    pubsub = self._redis.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
                    pubsub.subscribe(self.keys.channel)
                now = time.monotonic()  # schedules the keeper only; decisions use server time
                if now >= next_renew:
                    self._renew()
                    next_renew = now + self.lease_s / 3
                if now >= next_tick:
                    self._decide(
                        lambda s: decide.on_tick(
                            s, self.config, local=self._window, latency=self._latency
                        )
                    )
                    next_tick = now + self.config.tick_s
                wait = max(0.0, min(next_tick, next_renew) - time.monotonic())
                if pubsub.get_message(timeout=wait) is not None:
                    self._wake_one()
            except LOST as exc:
                if pubsub is not None:
                    _quietly(pubsub.close)
                pubsub = None
                self._lost(exc)
        if pubsub is not None:
            _quietly(pubsub.close)

    def _renew(self) -> None:
        leases = list(self._held)
        self._scripts["renew"](
            keys=[self.keys.leases, self.keys.procs],
            args=[self.lease_s, self.process_id, 3 * self.lease_s, *leases],
        )

    def _wake_one(self) -> None:
        """A slot was freed somewhere: let one waiter of this process ask for it."""
        with self._lock:
            self._slot_freed.notify(1)
            if self._slot_waiters:
                future = self._slot_waiters.pop()
                future.get_loop().call_soon_threadsafe(
                    lambda: None if future.done() else future.set_result(None)
                )

    def _lost(self, exc: BaseException) -> BackpressureController:
        """Redis stopped answering: limit this process alone (said once per outage)."""
        with self._mode_lock:
            if self._fallback is not None:
                return self._fallback
            last = self._last
            processes = 1 if last is None else max(1, last.processes)
            rate = self.config.requests_per_s if last is None else last.num("rate")
            limit = float(self.config.max_concurrency) if last is None else last.num("limit")
            config = fallback_config(
                self.config,
                rate=rate,
                limit=limit,
                processes=processes,
                fraction=self.fallback_fraction,
            )
            gate = ProviderGate(clock=time.monotonic)
            if last is not None and last.gate > last.now:
                gate.pause(last.gate - last.now)  # a pause announced before Redis went away
            self._fallback = BackpressureController(config, gate=gate, labels=self.labels)
            self.outages += 1
            reason = " ".join(str(exc).split()) or type(exc).__name__
            message = (
                f"multiagent: Redis stopped answering ({reason}); limiting this process alone "
                f"at {config.requests_per_s:.3g} req/s and {config.max_concurrency} concurrent "
                "until it answers again"
            )
            _log.warning(message)
            print(message, file=sys.stderr, flush=True)
            return self._fallback

    def _try_rejoin(self) -> None:
        try:
            self._redis.ping()
            self._init_state()  # a restarted Redis starts from the last shared state seen
        except LOST:
            return
        with self._mode_lock:
            self._fallback = None
        print("multiagent: Redis answers again; sharing the limit again", file=sys.stderr)
        with self._lock:
            self._notify(rebooked=True)


def _quietly(close: Callable[[], object]) -> None:
    with contextlib.suppress(*LOST):
        close()
