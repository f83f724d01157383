"""Environment profiles: what a deployment may spend, how hard it pushes a provider, what it keeps.

A :class:`Profile` is plain data. The five built-in profiles follow the seed's ladder of models
(gpt-3.5-turbo → gpt-4o-mini → gpt-4o) and its validator ranges; cost policies
(:mod:`multiagent.policies.policies`) transform a profile, and :func:`multiagent.load_settings`
layers files, environment and flags on top.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, model_validator

Tier = Literal["fast", "standard", "premium"]
TIERS: tuple[Tier, ...] = ("fast", "standard", "premium")

#: The model ladder, cheapest first. Policies move a tier along it.
MODEL_LADDER: tuple[str, ...] = ("gpt-3.5-turbo", "gpt-4o-mini", "gpt-4o")


class _Section(BaseModel):
    # no setting is infinite or NaN ("inf" parses as a float and passes every ge/gt bound)
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


#: Output tokens one call may produce, by node (``default``: nodes not listed). A real model
#: writes until it is stopped; these bound each call's time and cost.
DEFAULT_MAX_OUTPUT_TOKENS: dict[str, int] = {
    "default": 1024,
    "plan": 512,
    "work": 1024,
    "speak": 1024,
    "moderate": 256,
    "summarize": 1024,
    "synthesize": 1024,
    "validate": 256,
}


class ModelTiers(_Section):
    """The model used for each tier of work: cheap chatter, agent turns, synthesis and summaries.

    Also what one call may read and write: ``context_window_tokens`` (``None``: the model's own,
    e.g. llama.cpp's ``n_ctx``, else unbounded) and ``max_output_tokens`` by node.
    """

    fast: str
    standard: str
    premium: str
    context_window_tokens: int | None = Field(default=None, gt=0)
    max_output_tokens: dict[str, PositiveInt] = Field(
        default_factory=lambda: dict(DEFAULT_MAX_OUTPUT_TOKENS)
    )

    def output_limit(self, node: str) -> int:
        """The output bound of a call from ``node``."""
        limits = self.max_output_tokens
        return limits.get(node, limits.get("default", DEFAULT_MAX_OUTPUT_TOKENS["default"]))

    def for_tier(self, tier: Tier) -> str:
        """Return the model name configured for ``tier``."""
        return str(getattr(self, tier))


class ValidationConfig(_Section):
    """How many validators a cross-validation uses and how many must agree."""

    validators_min: int = Field(ge=1, le=6)
    validators_max: int = Field(ge=1, le=6)
    consensus_threshold: float = Field(gt=0.0, le=1.0)
    #: Validators that must answer before an item's consensus counts (fewer: ``inconclusive``);
    #: ``None``: ``validators_min``. Never more than the validators an item has.
    quorum: int | None = Field(default=None, ge=1, le=6)

    def quorum_for(self, validators: int) -> int:
        """How many of an item's ``validators`` must answer for its consensus to count."""
        return max(1, min(validators, self.validators_min if self.quorum is None else self.quorum))

    @model_validator(mode="after")
    def _min_not_above_max(self) -> ValidationConfig:
        if self.validators_min > self.validators_max:
            raise ValueError(
                f"validators_min ({self.validators_min}) is above "
                f"validators_max ({self.validators_max})"
            )
        return self


class RateLimitConfig(_Section):
    """Pace and concurrency towards one provider model, and when adaptive backpressure reacts."""

    requests_per_minute: int = Field(gt=0)
    tokens_per_minute: int = Field(gt=0)
    max_concurrency: int = Field(ge=1, le=64)
    error_rate_threshold: float = Field(gt=0.0, le=1.0)
    rtt_threshold_s: float = Field(gt=0.0)
    max_wait_multiplier: float = Field(ge=1.0)
    retry_attempts: int = Field(ge=1, le=20)
    request_timeout_s: float = Field(gt=0.0)
    #: Share of the last Redis-shared limit the processes use together while Redis is away.
    redis_fallback_fraction: float = Field(default=0.5, gt=0.0, le=1.0)


HOURS_PER_YEAR = 365 * 24


class MemoryConfig(_Section):
    """What is kept of agent memory and checkpoints, and how often it is snapshotted."""

    #: At most a year: the schedule's next run must be a date (a traceback past year 9999).
    snapshot_interval_hours: float = Field(gt=0.0, le=HOURS_PER_YEAR)
    snapshots_per_agent: int = Field(ge=1)
    checkpoints_per_thread: int = Field(ge=1)
    thread_max_age_days: float = Field(gt=0.0)
    backups_kept: int = Field(ge=1)


class CacheConfig(_Section):
    """Completion and analysis caches: on or off, and how long an entry lives."""

    completion_enabled: bool
    completion_ttl_s: float = Field(gt=0.0)
    analysis_enabled: bool
    analysis_ttl_s: float = Field(gt=0.0)


class Features(_Section):
    """Feature toggles."""

    streaming: bool
    batch_processing: bool
    pii_redaction: bool


class ModelPrice(_Section):
    """USD per million tokens."""

    input_per_mtok: float = Field(ge=0.0, allow_inf_nan=False)
    output_per_mtok: float = Field(ge=0.0, allow_inf_nan=False)

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        """Return the USD cost of a call with the given token counts."""
        return (input_tokens * self.input_per_mtok + output_tokens * self.output_per_mtok) / 1e6


DEFAULT_PRICES: dict[str, ModelPrice] = {
    "gpt-3.5-turbo": ModelPrice(input_per_mtok=0.50, output_per_mtok=1.50),
    "gpt-4o-mini": ModelPrice(input_per_mtok=0.15, output_per_mtok=0.60),
    "gpt-4o": ModelPrice(input_per_mtok=2.50, output_per_mtok=10.00),
}


class BudgetConfig(_Section):
    """The project's budget: spend of every run and process together (see
    :mod:`multiagent.models.budget`)."""

    daily_usd: float | None = Field(default=None, ge=0.0, allow_inf_nan=False)
    #: Seconds a reservation keeps holding budget once the process holding it stops renewing
    #: it (killed mid-call); renewed every third of it while the process lives, however long
    #: the call (see :mod:`multiagent.models._budget_leases`). At least 1 s.
    lease_s: float = Field(default=30.0, ge=1.0, allow_inf_nan=False)
    #: Share of what was left of a Redis-shared budget a process may spend alone while
    #: Redis is unreachable (see :mod:`multiagent.models.budget_redis`).
    degraded_fraction: float = Field(default=0.1, ge=0.0, le=1.0, allow_inf_nan=False)


class Profile(_Section):
    """A complete environment profile."""

    description: str
    models: ModelTiers
    validation: ValidationConfig
    rate_limit: RateLimitConfig
    memory: MemoryConfig
    cache: CacheConfig
    features: Features
    budget_usd: float = Field(ge=0.0, allow_inf_nan=False)
    budget: BudgetConfig = BudgetConfig()
    prices: dict[str, ModelPrice]

    def price_of(self, model: str) -> ModelPrice | None:
        """Return the price of ``model``, or ``None`` when the table does not list it."""
        return self.prices.get(model)

    def require_price(self, model: str) -> ModelPrice:
        """Return the price of ``model``; a model without one is a configuration error.

        Raises:
            ConfigError: The price table does not list ``model`` (an explicit 0 is a price).
        """
        price = self.prices.get(model)
        if price is None:
            from multiagent.errors import ConfigError

            raise ConfigError(
                f"model {model!r} has no price, so its calls could not be budgeted; add "
                f'[prices."{model}"] input_per_mtok = ... and output_per_mtok = ... to '
                f"multiagent.toml (0 is allowed), or the same as JSON in MULTIAGENT_PRICES"
            )
        return price


def _profile(
    description: str,
    *,
    models: tuple[str, str, str],
    validators: tuple[int, int],
    threshold: float,
    rpm: int,
    tpm: int,
    concurrency: int,
    retries: int,
    checkpoints: int,
    budget: float,
    redact: bool,
) -> Profile:
    return Profile(
        description=description,
        models=ModelTiers(fast=models[0], standard=models[1], premium=models[2]),
        validation=ValidationConfig(
            validators_min=validators[0],
            validators_max=validators[1],
            consensus_threshold=threshold,
        ),
        rate_limit=RateLimitConfig(
            requests_per_minute=rpm,
            tokens_per_minute=tpm,
            max_concurrency=concurrency,
            error_rate_threshold=0.10,
            rtt_threshold_s=5.0,
            max_wait_multiplier=3.0,
            retry_attempts=retries,
            request_timeout_s=60.0,
        ),
        memory=MemoryConfig(
            snapshot_interval_hours=6.0,
            snapshots_per_agent=10,
            checkpoints_per_thread=checkpoints,
            thread_max_age_days=30.0,
            backups_kept=7,
        ),
        cache=CacheConfig(
            completion_enabled=True,
            completion_ttl_s=24 * 3600.0,
            analysis_enabled=True,
            analysis_ttl_s=3600.0,
        ),
        features=Features(streaming=True, batch_processing=True, pii_redaction=redact),
        budget_usd=budget,
        prices=dict(DEFAULT_PRICES),
    )


BUILTIN_PROFILES: dict[str, Profile] = {
    "dev_cost": _profile(
        "Development on the cheapest models (gpt-3.5-turbo), 1-2 validators.",
        models=("gpt-3.5-turbo", "gpt-3.5-turbo", "gpt-4o-mini"),
        validators=(1, 2),
        threshold=0.5,
        rpm=500,
        tpm=200_000,
        concurrency=5,
        retries=3,
        checkpoints=20,
        budget=0.50,
        redact=False,
    ),
    "dev_balanced": _profile(
        "Balanced development (gpt-4o-mini), 2-3 validators.",
        models=("gpt-3.5-turbo", "gpt-4o-mini", "gpt-4o-mini"),
        validators=(2, 3),
        threshold=0.6,
        rpm=1_000,
        tpm=400_000,
        concurrency=6,
        retries=4,
        checkpoints=50,
        budget=2.00,
        redact=False,
    ),
    "staging_quality": _profile(
        "Quality-focused staging (gpt-4o), 3-5 validators.",
        models=("gpt-4o-mini", "gpt-4o", "gpt-4o"),
        validators=(3, 5),
        threshold=0.7,
        rpm=2_000,
        tpm=800_000,
        concurrency=8,
        retries=5,
        checkpoints=100,
        budget=10.00,
        redact=True,
    ),
    "prod_balanced": _profile(
        "Production balanced (gpt-4o-mini), 2-4 validators.",
        models=("gpt-3.5-turbo", "gpt-4o-mini", "gpt-4o"),
        validators=(2, 4),
        threshold=0.66,
        rpm=3_000,
        tpm=1_000_000,
        concurrency=8,
        retries=5,
        checkpoints=100,
        budget=5.00,
        redact=True,
    ),
    "prod_quality": _profile(
        "Maximum production quality (gpt-4o), 3-6 validators.",
        models=("gpt-4o-mini", "gpt-4o", "gpt-4o"),
        validators=(3, 6),
        threshold=0.75,
        rpm=5_000,
        tpm=2_000_000,
        concurrency=8,
        retries=6,
        checkpoints=200,
        budget=25.00,
        redact=True,
    ),
}

DEFAULT_PROFILE = "dev_balanced"
