"""The shared controller's decisions: the in-process algorithm run on a snapshot of Redis state.

A decision (a 429's cut, an advertised limit, a tick's probe or AIMD step) is computed by the
same code as in one process (:class:`~multiagent.models._pace.Pace`,
:func:`~multiagent.models._bp_health.fit_limit`), on a :class:`Pace` rebuilt from the shared
hash, and written back with a compare-and-set on the hash's version (the ``APPLY`` script). Two
processes that see the same overload both compute a cut from the same version; the second
write fails, it reads again, and the cut's own guard (``sent_at <= decided``: sent before the
last cut) says the overload is answered already. So one overload cuts once across processes.

Capacity measurement between two refusals counts what *every* process sent and had refused in
between (the shared ``sends`` / ``refused`` sets), through :class:`SharedWindow`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import redis

from multiagent.models._bp_health import TokenLatency, fit_limit, read_health, settled_limit
from multiagent.models._bp_redis_lua import SharedKeys
from multiagent.models._bp_types import BackpressureConfig
from multiagent.models._pace import Pace
from multiagent.models._window import OutcomeWindow, admitted_profile

#: Pace fields kept in the shared hash, by attribute of :class:`Pace`.
_PACE_FIELDS = {
    "rate": "rate",
    "ceiling": "ceiling",
    "cuts": "cuts",
    "decided": "_decided",
    "settled": "_settled_at",
    "refused_at": "_refused_at",
    "pwait": "probe_wait",
    "rttref": "_rtt_ref",
    "fellfrom": "_fell_from",
}


@dataclass(frozen=True)
class Snapshot:
    """The shared state as one script read it, on the server's clock."""

    now: float
    gate: float
    processes: int
    fields: Mapping[str, str]
    leases: list[tuple[str, float]]

    def num(self, name: str, default: float = 0.0) -> float:
        """A numeric field (``none`` or missing: ``default``)."""
        value = self.fields.get(name, "")
        return default if value in ("", "none") else float(value)

    def optional(self, name: str) -> float | None:
        """A numeric field that may be unset."""
        value = self.fields.get(name, "")
        return None if value in ("", "none") else float(value)


@dataclass
class Decision:
    """Fields to write, whether booked slots become void, and a cap on the request TAT.

    ``spaced``: a rebook's first slot is one interval of the new pace after the last send, not
    at once (a 429 that named no pause; see ``APPLY``).
    """

    fields: dict[str, str] = field(default_factory=dict)
    rebook: bool = False
    tat_cap: float | None = None
    spaced: bool = False


def parse_snapshot(reply: list[str]) -> Snapshot:
    """Decode the ``SNAPSHOT`` script's reply."""
    now, gate, processes = float(reply[0]), float(reply[1]), int(reply[2])
    bar = reply.index("|", 3)
    flat, leases = reply[3:bar], reply[bar + 1 :]
    fields = dict(zip(flat[::2], flat[1::2], strict=True))
    pairs = [(leases[i], float(leases[i + 1])) for i in range(0, len(leases), 2)]
    return Snapshot(now=now, gate=gate, processes=processes, fields=fields, leases=pairs)


def initial_fields(
    config: BackpressureConfig, *, rate: float | None = None, limit: float | None = None
) -> dict[str, str]:
    """The hash of a new shared state (``rate``/``limit``: the last ones seen, on a rejoin)."""
    pace = Pace(config, now=0.0)
    return {
        "v": "0",
        "rate": repr(rate or pace.rate),
        "ceiling": repr(pace.ceiling),
        "limit": repr(limit or float(config.max_concurrency)),
        "mult": "1.0",
        "tat": "0",
        "tatk": "0",
        "epoch": "0",
        "burst": "0",  # no burst credit until the pace is confirmed (see _confirmed)
        "tps": repr(config.tokens_per_s or 0.0),
        "r429": "0",
        "cuts": "0",
        "lcuts": "0",
        "lastcut": "0",
        "decided": "0",
        "settled": "0",
        "refused_at": "0",
        "returned": "0",
        "capacity": "none",
        "adv_rps": "none",
        "adv_tps": "none",
        "f_sat": "0",
        "f_pb": "0",
        "f_rl": "0",
        "paused_total": "0",
        "pauses": "0",
    }


def pace_of(snap: Snapshot, config: BackpressureConfig) -> Pace:
    """The in-process :class:`Pace` in the state the shared hash holds."""
    pace = Pace(config, now=snap.num("start"))
    for name, attribute in _PACE_FIELDS.items():
        # a field not written yet keeps the fresh pace's value (a hash from an older version)
        setattr(pace, attribute, snap.num(name, getattr(pace, attribute)))
    pace.cuts = int(snap.num("cuts"))
    pace.capacity = snap.optional("capacity")
    pace._returned = snap.fields.get("returned") == "1"
    return pace


def pace_fields(pace: Pace) -> dict[str, str]:
    """The hash fields of ``pace``."""
    out = {name: repr(float(getattr(pace, attribute))) for name, attribute in _PACE_FIELDS.items()}
    out["cuts"] = str(pace.cuts)
    out["capacity"] = "none" if pace.capacity is None else repr(pace.capacity)
    out["returned"] = "1" if pace._returned else "0"
    return out


def _moved(before: float, after: float) -> bool:
    """Booked slots are void when the pace fell, or rose by more than a tenth."""
    return after < before or after > before * 1.1


def _changed(snap: Snapshot, fields: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in fields.items() if snap.fields.get(k) != v}


def _confirmed(snap: Snapshot, config: BackpressureConfig) -> dict[str, str]:
    """The burst credit, granted once the pace is known to hold.

    Until then the pace is a guess (the profile's), maybe far above the capacity: with burst
    credit, sends that fell behind it (a slow start, a busy CPU) go back to back and empty the
    provider's bucket faster than a 429 can reach Redis, so the sends of the few ms between
    the provider's refusal and its pause in Redis arrive during the pause. The pace holds once
    a capacity was measured, a limit advertised, or it cruised ``hold_s`` unrefused (a probe).
    """
    burst = repr(config.burst_s)
    return {} if snap.fields.get("burst") == burst else {"burst": burst}


class SharedWindow(OutcomeWindow):
    """What every process sent, answered and had refused (the shared sorted sets), for
    :class:`Pace`'s measurements; error shares come from this process's own window."""

    def __init__(self, client: redis.Redis, keys: SharedKeys, local: OutcomeWindow) -> None:
        super().__init__(span_s=local.span_s)
        self._client = client
        self._keys = keys
        self._local = local

    def measure(self, first: float, last: float) -> tuple[float, float]:
        """What every process had admitted between two refused sends (see the base class)."""
        if last <= first:
            return math.nan, math.nan
        low, high = f"({first!r}", f"({last!r}"
        scored: list[tuple[str, float]] = self._client.zrangebyscore(  # type: ignore[assignment]
            self._keys.sends, low, high, withscores=True
        )
        sends = sorted(float(score) for _member, score in scored)
        refused = int(self._client.zcount(self._keys.refused, low, high))
        return admitted_profile(sends, refused, first, last, self._local._error_share())

    def delivered_rate(self, now: float, *, span_s: float, since: float) -> float | None:
        """Answers per second, by every process, over the last ``span_s`` (not before ``since``)."""
        start = max(now - span_s, since)
        seconds = now - start
        if seconds < span_s / 4:
            return None
        answered = int(self._client.zcount(self._keys.answers, repr(start), "+inf"))
        return None if answered < 3 else answered / seconds


def on_rate_limited(
    snap: Snapshot,
    config: BackpressureConfig,
    *,
    sent_at: float,
    window: OutcomeWindow,
    unpaused: bool = False,
) -> Decision | None:
    """A 429 (not a concurrency refusal) of a request sent at ``sent_at`` (server time);
    ``unpaused``: it named no pause (no Retry-After), so a rebook spaces its first slot."""
    pace = pace_of(snap, config)
    before = pace.rate
    pace.on_rate_limited(sent_at=sent_at, now=snap.now, window=window)
    fields = _changed(snap, pace_fields(pace))
    if pace.capacity is not None and fields:
        fields.update(_confirmed(snap, config))
    if not fields:
        return None
    return Decision(fields=fields, rebook=_moved(before, pace.rate), spaced=unpaused)


def on_concurrency_refusal(
    snap: Snapshot, config: BackpressureConfig, *, sent_at: float
) -> Decision | None:
    """A 429 while budgets remained: cut the limit once per refusal sent after the last cut."""
    if sent_at <= snap.num("lastcut"):
        return None
    limit = max(float(config.min_concurrency), snap.num("limit") * config.limit_backoff)
    return Decision(
        fields={
            "limit": repr(limit),
            "lastcut": repr(snap.now),
            "lcuts": str(int(snap.num("lcuts")) + 1),
        }
    )


def on_advertised(
    snap: Snapshot,
    config: BackpressureConfig,
    *,
    rps: float | None,
    tps: float | None,
    rtt: float,
) -> Decision | None:
    """Follow a provider's advertised limits (the in-process controller's ``_learn_limits``)."""
    decision = Decision()
    if tps is not None and tps != snap.optional("adv_tps"):
        known = [v for v in (config.tokens_per_s, tps * config.headroom) if v is not None]
        decision.fields.update(adv_tps=repr(tps), tps=repr(min(known)))
    previous = snap.optional("adv_rps")
    if rps is not None and rps != previous:
        pace = pace_of(snap, config)
        before = pace.rate
        pace.advertised(rps, previous)
        decision.fields.update(_changed(snap, pace_fields(pace)), adv_rps=repr(rps))
        decision.fields.update(_confirmed(snap, config))
        decision.rebook = _moved(before, pace.rate)
        if previous is not None and rps > previous and not decision.rebook:
            # what the provider's bucket gathered while we learned of the raise, sent at once
            interval = snap.num("mult", 1.0) / pace.rate
            extra = min((rps - previous) * config.headroom * rtt, config.burst_s / interval)
            start = max(snap.now, snap.gate) + config.burst_s
            decision.tat_cap = start - extra * interval
    return decision if decision.fields else None


def on_tick(
    snap: Snapshot,
    config: BackpressureConfig,
    *,
    local: OutcomeWindow,
    latency: TokenLatency | None = None,
) -> Decision | None:
    """Every ``tick_s`` (once across processes): AIMD on health, Little's-law limit, probing.

    Health is this process's reading (its own outcomes and seconds per output token; without
    ``latency``, none reported: round trips against ``rtt_threshold_s``).
    """
    latency = latency or TokenLatency()
    now = snap.now
    if now - snap.num("lasttick") < config.tick_s:
        return None
    decision = Decision(fields={"lasttick": repr(now), "f_sat": "0", "f_pb": "0", "f_rl": "0"})
    health = read_health(local, latency, config, now=now)
    p95 = local.rtt(now, 0.95)
    limit, mult = snap.num("limit"), snap.num("mult", 1.0)
    if health.unhealthy:
        if now - snap.num("lastcut") >= config.window_s / 2:
            limit = max(float(config.min_concurrency), limit * health.scale)
            latency.judged(at=now)
            mult = min(config.max_wait_multiplier, mult * 1.5)
            decision.fields.update(lastcut=repr(now), lcuts=str(int(snap.num("lcuts")) + 1))
            decision.rebook = True
    else:
        mult = max(1.0, mult / 1.25)
        pace = pace_of(snap, config)
        saturated = snap.fields.get("f_sat") == "1" and health.may_grow
        rtt_s = p95 if health.may_grow else math.nan  # no floor sized by a queue's round trips
        grown = fit_limit(
            limit, config, rate=pace.rate, rtt_s=rtt_s, saturated=saturated,
            by_latency=latency.known,
        )  # fmt: skip
        limit = settled_limit(
            limit, grown, latency, config, now=now, reached=snap.fields.get("f_sat") == "1"
        )
        pace.note_rtt(local.recent_rtt(), now)
        bound = snap.fields.get("f_pb") == "1" and snap.fields.get("f_rl") != "1"
        if bound and now >= snap.gate:
            before = pace.rate
            if pace.grow(now, local):
                decision.fields.update(_confirmed(snap, config))
                decision.rebook = _moved(before, pace.rate)
        decision.fields.update(_changed(snap, pace_fields(pace)))
    decision.fields.update(limit=repr(limit), mult=repr(mult))
    return decision
