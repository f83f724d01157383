"""What the simulator serves: limits, latency, injected faults and the capacity schedule.

A :class:`SimServerConfig` holds the base values; each :class:`Phase` of a schedule overrides
some of them for ``duration_s`` seconds. :meth:`SimServerConfig.resolved_phases` turns both into
the concrete :class:`PhaseCapacity` the server enforces, one per phase (a single ``steady``
phase when there is no schedule).
"""

from __future__ import annotations

from typing import TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from multiagent.errors import UsageError

_T = TypeVar("_T")

DEFAULT_MODELS = ("gpt-3.5-turbo", "gpt-4o-mini", "gpt-4o")


class Phase(BaseModel):
    """One phase of a capacity schedule; fields left out keep the server's base values."""

    # JSON's 1e999 and TOML's inf and nan are floats too: a phase of infinite rpm or latency
    # is no schedule anyone meant
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    name: str = Field(min_length=1)
    duration_s: float = Field(gt=0)
    rpm: float | None = Field(default=None, gt=0)
    tpm: float | None = Field(default=None, gt=0)
    max_concurrency: int | None = Field(default=None, ge=1)
    ttft_s: float | None = Field(default=None, ge=0)
    token_latency_s: float | None = Field(default=None, ge=0)
    latency_multiplier: float = Field(default=1.0, gt=0)
    error_rate: float | None = Field(default=None, ge=0, le=1)
    spike_rate: float | None = Field(default=None, ge=0, le=1)


class PhaseCapacity(BaseModel):
    """The limits, latency and faults in force during one phase (``duration_s`` None: forever)."""

    model_config = ConfigDict(frozen=True)

    name: str
    duration_s: float | None
    rpm: float
    tpm: float
    max_concurrency: int
    ttft_s: float
    token_latency_s: float
    error_rate: float
    spike_rate: float

    @property
    def requests_per_s(self) -> float:
        """Steady request capacity: ``rpm / 60``."""
        return self.rpm / 60.0

    @property
    def tokens_per_s(self) -> float:
        """Steady token capacity: ``tpm / 60``."""
        return self.tpm / 60.0


class SimServerConfig(BaseModel):
    """Base limits, latency and faults of the simulator, and its optional schedule.

    Limits work like OpenAI's: a request costs one request and ``prompt tokens + max output
    tokens`` tokens (``default_max_tokens`` when the request gives none). Each limit is a token
    bucket refilled continuously at ``limit / 60`` per second holding at most ``burst_s`` seconds
    of it, so the capacity of a phase is exactly ``rpm / 60`` requests per second (and
    ``tpm / 60`` tokens per second). ``limit_headers`` False sends no ``x-ratelimit-*``
    headers (a 429 still carries its Retry-After), as vLLM, Ollama and llama.cpp's server do.
    ``event_log`` True keeps every Retry-After handed out and every early arrival, each with
    the request's ``x-request-id``, until the next reset (``GET /sim/events``): for tests that
    match what the server saw against what their clients did.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    rpm: float = Field(default=600.0, gt=0)
    tpm: float = Field(default=1_000_000.0, gt=0)
    max_concurrency: int = Field(default=64, ge=1)
    ttft_s: float = Field(default=0.0, ge=0)
    token_latency_s: float = Field(default=0.0, ge=0)
    error_rate: float = Field(default=0.0, ge=0, le=1)
    spike_rate: float = Field(default=0.0, ge=0, le=1)
    spike_s: float = Field(default=1.0, ge=0)
    burst_s: float = Field(default=1.0, gt=0)
    default_max_tokens: int = Field(default=256, ge=1)
    seed: int = 0
    limit_headers: bool = True
    event_log: bool = False
    models: tuple[str, ...] = DEFAULT_MODELS
    schedule: tuple[Phase, ...] = ()

    def resolved_phases(self) -> tuple[PhaseCapacity, ...]:
        """The phases with the base values filled in; the last one holds once reached."""
        phases = self.schedule or (Phase(name="steady", duration_s=1.0),)
        resolved = []
        for index, phase in enumerate(phases):
            last = index == len(phases) - 1
            resolved.append(
                PhaseCapacity(
                    name=phase.name,
                    duration_s=None if last else phase.duration_s,
                    rpm=_given(phase.rpm, self.rpm),
                    tpm=_given(phase.tpm, self.tpm),
                    max_concurrency=_given(phase.max_concurrency, self.max_concurrency),
                    ttft_s=_given(phase.ttft_s, self.ttft_s) * phase.latency_multiplier,
                    token_latency_s=_given(phase.token_latency_s, self.token_latency_s)
                    * phase.latency_multiplier,
                    error_rate=_given(phase.error_rate, self.error_rate),
                    spike_rate=_given(phase.spike_rate, self.spike_rate),
                )
            )
        return tuple(resolved)


def _given(value: _T | None, default: _T) -> _T:
    return default if value is None else value


def build_sim_config(
    *, flag_names: dict[str, str] | None = None, **values: object
) -> SimServerConfig:
    """Validate ``values`` into a :class:`SimServerConfig`, bad ones as one-line ``UsageError``.

    Args:
        flag_names: How to name each field in the message (e.g. ``{"rpm": "--rpm"}``).
        **values: Fields of :class:`SimServerConfig`.

    Raises:
        UsageError: A value is out of range or of the wrong type.
    """
    try:
        return SimServerConfig.model_validate(values)
    except ValidationError as exc:
        names = flag_names or {}
        problems = []
        for error in exc.errors():
            field = str(error["loc"][0]) if error["loc"] else "value"
            shown = names.get(field, field)
            problems.append(f"{shown}={error.get('input')!r}: {error['msg'].lower()}")
        raise UsageError("bad simulator setting " + "; ".join(problems)) from None
