"""What the simulator saw, in total and per phase of its schedule."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Literal


@dataclass
class Counts:
    """Counters of chat-completion requests; a request counts in the phase it arrived in.

    ``attempts`` is every well-formed request for a listed model (a 400, or a 404
    ``model_not_found``, is answered before the limits and counted nowhere); each ends as
    exactly one of ``successes``, ``rate_limited`` (429), ``server_errors`` (injected 5xx) or
    ``aborted`` (the client left before the reply was complete). ``early`` counts requests
    that arrived before a Retry-After the server had already handed out had expired.
    ``rejected_*`` split the 429s by the limit that refused them (a request refused by two
    limits counts under both).
    """

    attempts: int = 0
    successes: int = 0
    rate_limited: int = 0
    server_errors: int = 0
    aborted: int = 0
    early: int = 0
    latency_spikes: int = 0
    rejected_requests: int = 0
    rejected_tokens: int = 0
    rejected_concurrency: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def tokens_served(self) -> int:
        """Prompt plus completion tokens of the successful requests."""
        return self.prompt_tokens + self.completion_tokens

    def as_dict(self) -> dict[str, int]:
        """The counters, ``tokens_served`` included."""
        return {**asdict(self), "tokens_served": self.tokens_served}

    def add(self, other: Counts) -> None:
        """Add ``other``'s counters to these."""
        for field in fields(self):
            setattr(self, field.name, getattr(self, field.name) + getattr(other, field.name))


@dataclass(frozen=True)
class SimEvent:
    """One entry of the opt-in event log (``SimServerConfig.event_log``); times are epoch s.

    ``retry_after``: a 429 that told its client to wait, ``deadline`` being the moment it
    announced. ``early``: a request that arrived before ``deadline``, the latest Retry-After
    moment handed out (the one the ``early`` counter judges by). ``request_id`` is the
    request's ``x-request-id`` header (``None`` without one).
    """

    kind: Literal["retry_after", "early"]
    request_id: str | None
    at: float
    deadline: float


def rates(counts: Counts, *, seconds: float, requests_per_s: float) -> dict[str, Any]:
    """Throughput over ``seconds`` against the steady capacity of the same interval.

    ``capacity_requests`` is ``requests_per_s * seconds``; ``goodput_share`` is the share of it
    that succeeded. A phase that starts with a full bucket can exceed 1 by up to one burst.
    """
    if seconds <= 0:
        return {
            "successes_per_s": None,
            "tokens_served_per_s": None,
            "capacity_requests": 0.0,
            "goodput_share": None,
        }
    capacity = requests_per_s * seconds
    return {
        "successes_per_s": counts.successes / seconds,
        "tokens_served_per_s": counts.tokens_served / seconds,
        "capacity_requests": capacity,
        "goodput_share": counts.successes / capacity,
    }
