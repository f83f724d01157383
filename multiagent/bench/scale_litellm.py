"""LiteLLM's shared limiter, rebuilt as a baseline for ``bench scale --processes``.

What LiteLLM does (studied in BerriAI/litellm: the router's ``enforce_model_rate_limits``
pre-call check, ``router_utils/pre_call_checks/model_rate_limit_check.py``, and its cooldown
handlers, ``router_utils/cooldown_handlers.py``), and what this module reproduces:

- **Fixed per-minute counters in Redis.** A request first increments the deployment's
  ``rpm`` counter of the current wall-clock minute (key suffix ``%H-%M``, UTC, from the
  client's clock), the key expiring after 60 s; a count above the deployment's ``rpm`` is
  refused before it is sent (the refused request stays counted: increment first, no roll
  back). Before that, the ``tpm`` counter of the minute is read and a request is refused when
  it already reached ``tpm``; successful requests add their tokens to it afterwards.
  Reproduced, with the limits set to the provider's nominal limit, never changed.
- **Cooldown on 429.** After a 429 from the provider, LiteLLM's router takes the deployment
  out of rotation for a fixed ``cooldown_time`` (``DEFAULT_COOLDOWN_TIME_SECONDS`` = 5 s), kept
  in the shared cache so every router sees it; the length ignores the provider's Retry-After.
  Reproduced: a 429 seen by any process stops every process for 5 s.

What it does not reproduce: LiteLLM refuses an over-limit request with its own 429
(``retry-after: 60``) and its router retries or falls back to another deployment; with one
deployment there is nowhere to go, so here the request waits for the next minute (or for the
cooldown's end) instead of failing, which is kinder to LiteLLM than its own behaviour. The
newest LiteLLM skips the 429 cooldown when a model group has a single deployment; the cooldown
is kept here because it is LiteLLM's only reaction to a 429 and the scheme the issue names.
LiteLLM makes its checks in separate cache calls (an in-memory cache in front of Redis);
here one Lua script makes them in one round trip (the Redis path is no slower than
LiteLLM's). Tokens counted after success are the request's estimate, not the usage reported.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

import redis
import redis.asyncio as aioredis

from multiagent.models._bp_types import Ticket
from multiagent.models._bp_wait import Passage, Waiting
from multiagent.models.provider_errors import error_kind

#: LiteLLM's default cooldown after a 429 (``DEFAULT_COOLDOWN_TIME_SECONDS``).
COOLDOWN_S = 5.0
#: Seconds a per-minute counter lives (LiteLLM's ``RoutingArgs.ttl``).
COUNTER_TTL_S = 60

# KEYS: cooldown, rpm counter, tpm counter; ARGV: rpm limit, tpm limit, counter ttl.
# Returns {admitted (1/0), milliseconds of cooldown left (0 when none)}.
_CHECK = """
local cooldown = redis.call('PTTL', KEYS[1])
if cooldown > 0 then return {0, cooldown} end
local used = tonumber(redis.call('GET', KEYS[3]) or '0')
if used >= tonumber(ARGV[2]) then return {0, 0} end
local count = redis.call('INCR', KEYS[2])
if count == 1 then redis.call('EXPIRE', KEYS[2], ARGV[3]) end
if count > tonumber(ARGV[1]) then return {0, 0} end
return {1, 0}
"""


@dataclass(frozen=True)
class LiteLLMState:
    """The counters of the current minute and the cooldown left."""

    requests_this_minute: int
    tokens_this_minute: int
    cooldown_s: float


def _minute(now: float) -> str:
    return time.strftime("%H-%M", time.gmtime(now))


def _to_next_minute(now: float) -> float:
    return 60.0 - now % 60.0 + 0.001


class LiteLLMCounterController:
    """Per-minute request/token counters shared in Redis plus a 5-s cooldown after any 429.

    Has the public methods of :class:`~multiagent.models.backpressure.BackpressureController`
    (``acquire``, ``aacquire``, ``release``, ``cancel``, ``slot``, ``aslot``, ``state``,
    ``samples``), so a benchmark drives it the same way.
    """

    def __init__(
        self,
        *,
        redis_url: str,
        deployment: str,
        rpm: int,
        tpm: int,
        cooldown_s: float = COOLDOWN_S,
    ) -> None:
        """Count against ``rpm``/``tpm`` under keys named after ``deployment``."""
        self.redis_url = redis_url
        self.deployment = deployment
        self.rpm, self.tpm, self.cooldown_s = rpm, tpm, cooldown_s
        self._sync: redis.Redis | None = None
        self._async: aioredis.Redis | None = None

    def _keys(self, now: float) -> list[str]:
        minute = _minute(now)
        base = f"litellm:{self.deployment}"
        return [f"{base}:cooldown", f"{base}:rpm:{minute}", f"{base}:tpm:{minute}"]

    def _args(self) -> list[int]:
        return [self.rpm, self.tpm, COUNTER_TTL_S]

    @staticmethod
    def _wait(reply: Any, now: float) -> float:
        """Seconds to wait after a check's reply: 0 when admitted."""
        admitted, cooldown_ms = (int(v) for v in reply)
        if admitted:
            return 0.0
        return cooldown_ms / 1000 if cooldown_ms > 0 else _to_next_minute(now)

    def _client(self) -> redis.Redis:
        if self._sync is None:
            self._sync = redis.Redis.from_url(self.redis_url, decode_responses=True)
        return self._sync

    def _aclient(self) -> aioredis.Redis:
        if self._async is None:
            self._async = aioredis.Redis.from_url(self.redis_url, decode_responses=True)
        return self._async

    # -- the controller's surface ----------------------------------------------------------

    def acquire(self, *, tokens: int = 0) -> Ticket:
        """Block until the counters admit a request and no cooldown holds."""
        client = self._client()
        while True:
            now = time.time()
            wait = self._wait(client.eval(_CHECK, 3, *self._keys(now), *self._args()), now)
            if wait <= 0:
                return Ticket(tokens=max(0, tokens), holds_slot=True, sent_at=time.monotonic())
            time.sleep(wait)

    async def aacquire(self, *, tokens: int = 0) -> Ticket:
        """Async :meth:`acquire`."""
        client = self._aclient()
        while True:
            now = time.time()
            reply = await client.eval(_CHECK, 3, *self._keys(now), *self._args())  # type: ignore[misc]
            wait = self._wait(reply, now)
            if wait <= 0:
                return Ticket(tokens=max(0, tokens), holds_slot=True, sent_at=time.monotonic())
            await asyncio.sleep(wait)

    def release(
        self,
        ticket: Ticket,
        *,
        error: BaseException | None = None,
        headers: Mapping[str, str] | None = None,
        output_tokens: int | None = None,
        served_s: float | None = None,
    ) -> None:
        """Count a success's tokens; start the shared cooldown after a 429 (LiteLLM's limiter
        reads no latency, so ``output_tokens`` and ``served_s`` are accepted and not used)."""
        if ticket.done:
            return
        ticket.done = True
        keys = self._keys(time.time())
        client = self._client()
        if error is None:
            with client.pipeline() as pipe:
                pipe.incrby(keys[2], ticket.tokens)
                pipe.expire(keys[2], COUNTER_TTL_S, nx=True)
                pipe.execute()
        elif error_kind(error) == "rate_limit":
            client.set(keys[0], "1", px=max(1, int(self.cooldown_s * 1000)))

    def cancel(self, ticket: Ticket) -> None:
        """Nothing to give back: LiteLLM's counters are never decremented."""
        ticket.done = True

    def slot(self, *, tokens: int = 0) -> Passage:
        """``with controller.slot(tokens=n) as passage:``, as the adaptive controller's."""
        return Passage(cast("Waiting", self), tokens=tokens)

    def aslot(self, *, tokens: int = 0) -> Passage:
        """``async with controller.aslot(tokens=n) as passage:``."""
        return Passage(cast("Waiting", self), tokens=tokens)

    def state(self) -> LiteLLMState:
        """The current minute's counters and the cooldown left."""
        cooldown, rpm, tpm = self._keys(time.time())
        with self._client().pipeline(transaction=False) as pipe:
            pipe.pttl(cooldown)
            pipe.get(rpm)
            pipe.get(tpm)
            left, requests, used = pipe.execute()
        return LiteLLMState(int(requests or 0), int(used or 0), max(0, int(left)) / 1000)

    def samples(self) -> list[Any]:
        """No gauges: LiteLLM exports none for this scheme."""
        return []

    async def aclose(self) -> None:
        """Close both Redis clients."""
        if self._async is not None:
            await self._async.aclose()
            self._async = None
        self.close()

    def close(self) -> None:
        """Close the blocking Redis client."""
        if self._sync is not None:
            self._sync.close()
            self._sync = None


def new_deployment_name(label: str) -> str:
    """A deployment name no earlier run used, so counters and cooldown start empty."""
    return f"{label}-{uuid.uuid4().hex[:8]}"
