"""The adaptive backpressure controller shared by every process through Redis.

One provider rate limit, many processes (on one or many machines): each process paced alone to
the provider's limit would together exceed it. Here the controller's state for a (provider,
base URL, model) lives in Redis and changes only through Lua scripts (``_bp_redis_lua``), on
the server's clock:

- **one call to send**: ``ACQUIRE`` takes a slot (a *lease* in a sorted set, scored by its
  deadline), books the request's place in the shared GCRA schedule (requests and tokens) and
  answers "go", "wait until T" or "no slot". A waiter sleeps until T (then asks again: the
  booking is checked against the shared pause and the pace's epoch) or until a slot is freed
  (``PUBLISH`` from ``RELEASE``, read by this process's keeper thread, which wakes one waiter);
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
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
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
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

from multiagent.errors import ConfigError, UsageError
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
from multiagent.models._bp_redis_state import (
    SharedBackpressureState,
    fallback_config,
    fallback_state,
    shared_samples,
    shared_state,
)
from multiagent.models._bp_types import BackpressureConfig, Ticket, concurrency_refusal, kind_of
from multiagent.models._gate import ProviderGate
from multiagent.models._window import Outcome
from multiagent.models.backpressure import BackpressureController
from multiagent.models.provider_errors import advertised_limits, headers_of, retry_after_s
from multiagent.observability.metrics import Sample, get_metrics
from multiagent.policies.settings import check_redis_url

_log = logging.getLogger(__name__)
_LOST = (RedisError, OSError)


@dataclass(eq=False)
class SharedTicket(Ticket):
    """A ticket with its lease name; ``local`` is set when a fallback controller admitted it."""

    lease: str = ""
    local: Ticket | None = None
    local_controller: BackpressureController | None = None


class RedisBackpressureController(BackpressureController):
    """Adaptive concurrency, pace and pause for one (provider, base URL, model), shared by every
    process that names the same Redis ``key``; the same API as :class:`BackpressureController`.

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

    def close(self) -> None:
        """Stop the keeper thread (leases still held expire on their own)."""
        self._stop.set()
        self._keeper.join(timeout=5.0)

    # -- sending -------------------------------------------------------------------------------

    def request(self, *, tokens: int = 0) -> SharedTicket:
        """Register a request of about ``tokens`` tokens."""
        return SharedTicket(tokens=max(0, tokens), lease=f"{self.process_id}#{next(self._numbers)}")

    def _poll(self, ticket: Ticket) -> float:
        assert isinstance(ticket, SharedTicket)
        fallback = self._fallback
        if ticket.local is None and fallback is None:
            try:
                return self._poll_shared(ticket)
            except _LOST as exc:
                fallback = self._lost(exc)
        return self._poll_local(ticket, fallback)

    def _poll_shared(self, ticket: SharedTicket) -> float:
        keys = self.keys
        args: list[str | int | float] = [
            ticket.lease,
            ticket.tokens,
            self.lease_s,
            self.process_id,
            "" if ticket.slot_at is None else repr(ticket.slot_at),
            ticket.epoch,
        ]
        for _ in range(2):
            verdict, due, slot, epoch, now = self._scripts["acquire"](
                keys=[keys.state, keys.leases, keys.gate, keys.sends, keys.procs], args=args
            )
            if verdict != "init":
                break
            self._init_state()
        if verdict == "slot" or verdict == "init":
            self._flags.saturated = True
            return math.inf
        ticket.holds_slot = True
        self._held[ticket.lease] = ticket
        ticket.epoch = int(epoch)
        ticket.slot_at = float(slot) if slot else None
        if verdict == "wait":
            return max(float(due) - float(now), 1e-6)
        ticket.sent_at = float(now)
        return 0.0

    def _poll_local(self, ticket: SharedTicket, fallback: BackpressureController | None) -> float:
        if ticket.local is None:
            assert fallback is not None
            self._held.pop(ticket.lease, None)  # its lease (if any) expires on its own
            ticket.local_controller, ticket.local = fallback, fallback.request(tokens=ticket.tokens)
        assert ticket.local_controller is not None
        return ticket.local_controller.poll(ticket.local)

    def cancel(self, ticket: Ticket) -> None:
        """Give up ``ticket`` without an outcome (the caller was cancelled)."""
        self._finish(ticket, kind=None, error=None, headers=None)

    def release(
        self,
        ticket: Ticket,
        *,
        error: BaseException | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Record how a sent request ended, give its slot back, and adapt (for everyone)."""
        self._finish(ticket, kind=kind_of(error), error=error, headers=headers)

    def _finish(
        self,
        ticket: Ticket,
        *,
        kind: str | None,
        error: BaseException | None,
        headers: Mapping[str, str] | None,
    ) -> None:
        """Release (``kind`` given) or cancel (``None``) a ticket, exactly once."""
        assert isinstance(ticket, SharedTicket)
        if ticket.done:
            return
        ticket.done = True
        if ticket.local is not None and ticket.local_controller is not None:
            if kind is None:
                ticket.local_controller.cancel(ticket.local)
            else:
                ticket.local_controller.release(ticket.local, error=error, headers=headers)
            with self._lock:
                self._notify(rebooked=False)
            return
        if not ticket.holds_slot or self._held.pop(ticket.lease, None) is None:
            return
        try:
            self._release_shared(ticket, kind=kind, error=error, headers=headers)
        except _LOST as exc:
            self._lost(exc)  # the lease expires on its own; nothing is held here
        with self._lock:
            self._notify(rebooked=False)

    def _release_shared(
        self,
        ticket: SharedTicket,
        *,
        kind: str | None,
        error: BaseException | None,
        headers: Mapping[str, str] | None,
    ) -> None:
        keys, cfg = self.keys, self.config
        wait = retry_after_s(error) if kind == "rate_limit" and error is not None else None
        now_s, _version, adv_rps, adv_tps, _removed = self._scripts["release"](
            keys=[keys.state, keys.leases, keys.gate, keys.answers, keys.refused, keys.sends],
            args=[
                ticket.lease,
                kind or "cancel",
                repr(ticket.sent_at or 0.0),
                ticket.epoch,
                "" if wait is None else repr(wait),
                cfg.window_s,
                keys.channel,
            ],
        )
        if kind is None or ticket.sent_at is None:
            return
        now, sent_at = float(now_s), ticket.sent_at
        with self._lock:
            self._window.add(Outcome(at=now, rtt_s=now - sent_at, kind=kind))  # type: ignore[arg-type]
        seen = headers if headers is not None else headers_of(error) if error else None
        if seen is not None and cfg.use_limit_headers:
            rps, tps = advertised_limits(seen)
            if (rps is not None and repr(rps) != adv_rps) or (
                tps is not None and repr(tps) != adv_tps
            ):
                self._decide(
                    lambda s: decide.on_advertised(s, cfg, rps=rps, tps=tps, rtt=now - sent_at)
                )
        if kind == "rate_limit":
            if concurrency_refusal(seen):
                self._decide(lambda s: decide.on_concurrency_refusal(s, cfg, sent_at=sent_at))
            else:
                window = self._shared_window
                self._decide(
                    lambda s: decide.on_rate_limited(s, cfg, sent_at=sent_at, window=window)
                )

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
            applied = self._scripts["apply"](
                keys=[self.keys.state, self.keys.gate],
                args=[snap.fields.get("v", "0"), int(decision.rebook), cap, *pairs],
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
                    self._decide(lambda s: decide.on_tick(s, self.config, local=self._window))
                    next_tick = now + self.config.tick_s
                wait = max(0.0, min(next_tick, next_renew) - time.monotonic())
                if pubsub.get_message(timeout=wait) is not None:
                    self._wake_one()
            except _LOST as exc:
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
        except _LOST:
            return
        with self._mode_lock:
            self._fallback = None
        print("multiagent: Redis answers again; sharing the limit again", file=sys.stderr)
        with self._lock:
            self._notify(rebooked=True)

    # -- reading -------------------------------------------------------------------------------

    def state(self) -> SharedBackpressureState:
        """The shared state (or, while fallen back, this process's own, ``shared=False``)."""
        fallback = self._fallback
        if fallback is None:
            try:
                snap = self._snapshot()
                with self._lock:
                    return shared_state(
                        snap, local=self._window, lease_s=self.lease_s, process_id=self.process_id
                    )
            except _LOST as exc:
                fallback = self._lost(exc)
        last = self._last
        return fallback_state(
            fallback.state(),
            processes=1 if last is None else max(1, last.processes),
            rate_limited=0 if last is None else int(last.num("r429")),
            process_id=self.process_id,
        )

    def samples(self) -> list[Sample]:
        """Gauge samples (``backpressure_*``, shared ones included) for the metrics store."""
        return shared_samples(self.state(), self.labels)


def _quietly(close: Callable[[], object]) -> None:
    with contextlib.suppress(*_LOST):
        close()


# -- one controller per (Redis, provider, base URL, model) per process --------------------------

_REGISTRY_LOCK = threading.Lock()
_SHARED: dict[tuple[str, str, str, str], RedisBackpressureController] = {}


def connect(url: str) -> redis.Redis:
    """A pinged client for the limiter: short timeouts, no retries (a lost Redis falls back).

    Raises:
        ConfigError: The URL is malformed.
        UsageError: Nothing answers at the URL.
    """
    check_redis_url(url, source="MULTIAGENT_REDIS_URL")
    try:
        client = redis.Redis.from_url(
            url,
            decode_responses=True,
            socket_connect_timeout=1.0,
            socket_timeout=2.0,
            retry=Retry(NoBackoff(), 0),
        )
    except (ValueError, RedisError) as exc:
        raise ConfigError(f"malformed MULTIAGENT_REDIS_URL {url!r}: {exc}") from None
    try:
        client.ping()
    except _LOST as exc:
        client.close()
        shown = url.split("@")[-1]
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise UsageError(
            f"cannot reach Redis at MULTIAGENT_REDIS_URL {shown!r}: {reason}"
        ) from None
    return client


def shared_redis_controller(
    *,
    provider: str,
    model: str,
    base_url: str | None,
    config: BackpressureConfig,
    redis_url: str,
    fallback_fraction: float = 0.5,
) -> RedisBackpressureController:
    """The process's Redis-shared controller for (provider, base URL, model), made on first use.

    Every process naming the same Redis and key shares one limit; within a process the same
    rules as :func:`~multiagent.models.adaptive.shared_controller` hold (one configuration per
    key). Exported to the metrics store as ``multiagent_backpressure_*{provider,model}``.

    Raises:
        ConfigError: The URL is malformed, or this key exists with another configuration.
        UsageError: Redis does not answer (at start; later outages fall back instead).
    """
    from multiagent.models import adaptive  # the registry's reset lives there

    endpoint = base_url or "default"
    with _REGISTRY_LOCK:
        existing = _SHARED.get((redis_url, provider, model, endpoint))
        if existing is not None:
            if existing.config != config:
                raise ConfigError(
                    adaptive._conflict(provider, endpoint, model, existing.config, config)
                )
            return existing
        client = connect(redis_url)
        controller = RedisBackpressureController(
            config,
            client=client,
            key=f"multiagent:bp:{provider}|{endpoint}|{model}",
            endpoint_key=f"multiagent:bp:{provider}|{endpoint}",
            labels={"provider": provider, "model": model},
            fallback_fraction=fallback_fraction,
        )
        _SHARED[(redis_url, provider, model, endpoint)] = controller
        remove = get_metrics().add_collector(controller.samples)

    def forget() -> None:
        remove()
        with _REGISTRY_LOCK:
            _SHARED.pop((redis_url, provider, model, endpoint), None)
        controller.close()
        client.close()

    with adaptive._REGISTRY_LOCK:
        adaptive._REMOVERS.append(forget)
    return controller
