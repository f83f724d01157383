"""The shared controller's calls: send (``ACQUIRE``), finish (``RELEASE``), and read its state.

See :mod:`multiagent.models.backpressure_redis` for the design; the Redis state, decisions,
keeper thread and fallback are :class:`~multiagent.models._bp_redis_keeper.SharedStateKeeper`'s.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from multiagent._metrics import Sample
from multiagent.models import _bp_redis_decide as decide
from multiagent.models._bp_health import judged_latency
from multiagent.models._bp_redis_keeper import LOST, SharedStateKeeper, SharedTicket
from multiagent.models._bp_redis_state import (
    SharedBackpressureState,
    fallback_state,
    shared_samples,
    shared_state,
)
from multiagent.models._bp_types import Ticket, concurrency_refusal, kind_of
from multiagent.models._window import Outcome
from multiagent.models.backpressure import BackpressureController
from multiagent.models.provider_errors import advertised_limits, headers_of, retry_after_s


class RedisBackpressureController(SharedStateKeeper):
    """Adaptive concurrency, pace and pause for one (provider, base URL, model), shared by every
    process that names the same Redis ``key``; the same API as :class:`BackpressureController`.

    Constructed as :class:`~multiagent.models._bp_redis_keeper.SharedStateKeeper` (its
    arguments: one definition, not a copy to keep in step).
    """

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
            except LOST as exc:
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
            self.config.tick_s,  # a refused waiter asks again within a tick
            3 * self.lease_s,
            # other requests of this process still wait for a slot: it stays in ``want``
            int(len(self._wanting) - (ticket.lease in self._wanting) > 0),
        ]
        for _ in range(2):
            verdict, due, slot, epoch, now = self._scripts["acquire"](
                keys=[keys.state, keys.leases, keys.gate, keys.sends, keys.procs, keys.want],
                args=args,
            )
            if verdict != "init":
                break
            self._init_state()
        if verdict == "slot" or verdict == "init":
            self._flags.saturated = True
            self._wanting.add(ticket.lease)
            return math.inf
        self._wanting.discard(ticket.lease)
        ticket.holds_slot = True
        self._held[ticket.lease] = ticket
        ticket.epoch = int(epoch)
        ticket.slot_at = float(slot) if slot else None
        if verdict == "wait":
            return max(float(due) - float(now), 1e-6)
        ticket.sent_at = float(now)
        out = any(t.sent_at is not None for t in self._held.values() if t is not ticket)
        self._latency.sent(ticket, others_out=out)
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
        output_tokens: int | None = None,
        served_s: float | None = None,
    ) -> None:
        """Record how a sent request ended, give its slot back, and adapt (for everyone)."""
        self._finish(
            ticket,
            kind=kind_of(error),
            error=error,
            headers=headers,
            output_tokens=output_tokens,
            served_s=served_s,
        )

    def _finish(
        self,
        ticket: Ticket,
        *,
        kind: str | None,
        error: BaseException | None,
        headers: Mapping[str, str] | None,
        output_tokens: int | None = None,
        served_s: float | None = None,
    ) -> None:
        """Release (``kind`` given) or cancel (``None``) a ticket, exactly once."""
        assert isinstance(ticket, SharedTicket)
        if ticket.done:
            return
        ticket.done = True
        self._wanting.discard(ticket.lease)
        if ticket.local is not None and ticket.local_controller is not None:
            if kind is None:
                ticket.local_controller.cancel(ticket.local)
            else:
                ticket.local_controller.release(
                    ticket.local,
                    error=error,
                    headers=headers,
                    output_tokens=output_tokens,
                    served_s=served_s,
                )
            with self._lock:
                self._notify(rebooked=False)
            return
        if not ticket.holds_slot or self._held.pop(ticket.lease, None) is None:
            return
        try:
            self._release_shared(
                ticket,
                kind=kind,
                error=error,
                headers=headers,
                output_tokens=output_tokens,
                served_s=served_s,
            )
        except LOST as exc:
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
        output_tokens: int | None,
        served_s: float | None = None,
    ) -> None:
        keys, cfg = self.keys, self.config
        wait = retry_after_s(error) if kind == "rate_limit" and error is not None else None
        now_s, _version, adv_rps, adv_tps, _removed = self._scripts["release"](
            keys=[
                keys.state,
                keys.leases,
                keys.gate,
                keys.answers,
                keys.refused,
                keys.sends,
                keys.want,
            ],
            args=[
                ticket.lease,
                kind or "cancel",
                repr(ticket.sent_at or 0.0),
                ticket.epoch,
                "" if wait is None else repr(wait),
                max(cfg.window_s, cfg.measure_s),  # sends a capacity measurement reaches back to
                keys.channel,
                2 * cfg.tick_s,  # a waiter asks again every tick, renewing its want
            ],
        )
        if kind is None or ticket.sent_at is None:
            return
        now, sent_at = float(now_s), ticket.sent_at
        with self._lock:
            took = judged_latency(kind, now - sent_at, served_s)
            self._window.add(Outcome(at=now, rtt_s=took, kind=kind))  # type: ignore[arg-type]
            if kind == "ok" and output_tokens is not None:
                self._latency.add(
                    sent_at=sent_at, rtt_s=took, output_tokens=output_tokens,
                    alone=self._latency.ran_alone(ticket),
                )  # fmt: skip
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
                    lambda s: decide.on_rate_limited(
                        s, cfg, sent_at=sent_at, window=window, unpaused=wait is None
                    )
                )

    # -- reading -------------------------------------------------------------------------------

    def paused_for(self) -> float:
        """Seconds left of the shared pause (every process's gate lives in Redis: one read)."""
        return self.state().paused_for_s

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
            except LOST as exc:
                fallback = self._lost(exc)
        last = self._last
        return fallback_state(
            fallback.state(),
            processes=1 if last is None else max(1, last.processes),
            rate_limited=0 if last is None else int(last.num("r429")),
            process_id=self.process_id,
        )

    def samples(self) -> list[Sample]:
        """Gauge samples (``backpressure_*``, shared ones included) for the metrics store;
        none once closed: its gauges are not read from Redis, which may be gone (an exporter's
        last tick at exit), so a closed controller never falls back for it."""
        if self.closed:
            return []
        return shared_samples(self.state(), self.labels)
