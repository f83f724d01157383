"""Resolve the active settings, recording where every value came from.

Order, later wins: built-in profile → cost policy → ``multiagent.toml`` (the working directory's,
else the one in ``MULTIAGENT_HOME``) → environment (``MULTIAGENT_ENV``, ``MULTIAGENT_POLICY``,
nested overrides such as ``MULTIAGENT_RATE_LIMIT__MAX_CONCURRENCY``) → explicit arguments (CLI
flags). The environment is read once, here, with pydantic-settings; nodes never read it.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, SecretStr, ValidationError
from pydantic_core import ErrorDetails
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from multiagent.errors import ConfigError, did_you_mean
from multiagent.policies._checks import (
    _SECTIONS,
    _TOP_LEVEL,
    _check_home,
    _check_variable_names,
    _mask_url,
    _unknown_setting,
    check_checkpoint_url,
)
from multiagent.policies._checks import (
    check_openai_base_url as check_openai_base_url,
)
from multiagent.policies._checks import (
    check_redis_url as check_redis_url,
)
from multiagent.policies.local import for_local_provider
from multiagent.policies.policies import COST_POLICIES, DEFAULT_POLICY
from multiagent.policies.profiles import BUILTIN_PROFILES, DEFAULT_PROFILE, TIERS, Profile

Provider = Literal["sim", "openai", "local"]
PROVIDERS: tuple[str, ...] = ("sim", "openai", "local")
CONFIG_FILE_NAME = "multiagent.toml"
_URL_EXAMPLES = {
    "checkpoint_url": "postgresql://user@host:5432/db",
    "redis_url": "redis://127.0.0.1:6379/0",
}


class SimConfig(BaseModel):
    """The simulated provider: latency, determinism and injected faults."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    seed: int = 0
    ttft_s: float = Field(default=0.05, ge=0.0)
    token_latency_s: float = Field(default=0.004, ge=0.0)
    rate_limit_error_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    server_error_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    timeout_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    retry_after_s: float = Field(default=1.0, ge=0.0)


class Settings(BaseModel):
    """Everything a run needs to know, resolved once."""

    model_config = ConfigDict(frozen=True)

    env: str
    policy: str
    provider: Provider
    home: Path
    checkpoint_url: str | None
    redis_url: str | None = None
    openai_api_key: SecretStr | None
    openai_base_url: str | None
    profile: Profile
    sim: SimConfig
    sources: dict[str, str]

    def origin_of(self, path: str) -> str:
        """Where the setting at dotted ``path`` came from, naming the key unless the source does:
        ``file /x/multiagent.toml budget.daily_usd``, ``env MULTIAGENT_BUDGET__DAILY_USD``."""
        source = self.sources.get(path, f"profile {self.env}")
        own = ("env MULTIAGENT_" + path.replace(".", "__"), f"cli {path}")
        return source if source.casefold() in map(str.casefold, own) else f"{source} {path}"

    def as_report(self) -> dict[str, Any]:
        """Return the resolved configuration as JSON-ready data, with each value's source."""
        return {
            "env": self.env,
            "policy": self.policy,
            "provider": self.provider,
            "home": str(self.home),
            "checkpoint_url": _mask_url(self.checkpoint_url),
            "redis_url": _mask_url(self.redis_url),
            "openai_base_url": _mask_url(self.openai_base_url),
            "openai_api_key_set": self.openai_api_key is not None,
            "profile": self.profile.model_dump(mode="json"),
            "sim": self.sim.model_dump(mode="json"),
            "sources": dict(sorted(self.sources.items())),
        }


class _Environment(BaseSettings):
    """The process environment, read once."""

    model_config = SettingsConfigDict(
        env_prefix="MULTIAGENT_", env_nested_delimiter="__", extra="ignore"
    )

    env: str | None = None
    policy: str | None = None
    provider: str | None = None
    home: str | None = None
    checkpoint_url: str | None = None
    redis_url: str | None = None
    budget_usd: str | None = None
    models: dict[str, Any] | None = None
    validation: dict[str, Any] | None = None
    rate_limit: dict[str, Any] | None = None
    memory: dict[str, Any] | None = None
    cache: dict[str, Any] | None = None
    features: dict[str, Any] | None = None
    budget: dict[str, Any] | None = None
    prices: dict[str, Any] | None = None
    sim: dict[str, Any] | None = None
    openai_api_key: str | None = Field(
        default=None, validation_alias=AliasChoices("OPENAI_API_KEY")
    )
    openai_base_url: str | None = Field(
        default=None, validation_alias=AliasChoices("OPENAI_BASE_URL")
    )


def _read_environment() -> _Environment:
    """The environment, with a malformed ``MULTIAGENT_*`` value or a misspelt name one line."""
    _check_variable_names(os.environ)
    try:
        environ = _Environment()
    except (ValidationError, SettingsError) as exc:
        field = "?"
        if isinstance(exc, ValidationError):
            field = str(exc.errors()[0]["loc"][0])
        else:  # pydantic-settings names the field: 'error parsing value for field "x"'
            field = str(exc).split('"')[1] if '"' in str(exc) else field
        raise _not_an_object(field) from None
    for section in _SECTIONS:  # ``null`` parses, and would silently mean "not set"
        raw = os.environ.get(f"MULTIAGENT_{section.upper()}")
        if raw and not isinstance(getattr(environ, section), dict):
            raise _not_an_object(section)
    return environ


def _not_an_object(field: str) -> ConfigError:
    name = f"MULTIAGENT_{field.upper()}"
    value = os.environ.get(name, "")
    shown = value if len(value) <= 40 else value[:40] + "…"
    return ConfigError(
        f"invalid {name}={shown!r} (from the environment): it must be a JSON object such as "
        f'{{"key": value}}, or set one key with {name}__KEY=value'
    )


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping) and prefix != "prices.":  # a price entry is one value
            flat.update(flatten(value, f"{path}."))
        else:
            flat[path] = value
    return flat


def _set_path(data: dict[str, Any], path: str, value: Any) -> None:
    # model names hold dots ("gpt-3.5-turbo"), so a price path splits only once
    *parents, leaf = path.split(".", 1) if path.startswith("prices.") else path.split(".")
    node = data
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value


class _Layers:
    """Profile data with the source of every leaf value."""

    def __init__(self, base: dict[str, Any], source: str) -> None:
        self.data = base
        self.sources = {path: source for path in flatten(base)}

    def replace(self, new: dict[str, Any], source: str) -> None:
        before, after = flatten(self.data), flatten(new)
        for path, value in after.items():
            if before.get(path) != value:
                self.sources[path] = source
        self.data = new

    def overlay(
        self, values: Mapping[str, Any], source_of: Callable[[str], str], *, origin: str | None
    ) -> None:
        """Set ``values`` over the data; an unknown path is named with ``origin`` (``None``:
        with its own source, the variable that set it)."""
        known = flatten(self.data)
        for path, value in flatten(values).items():
            section = path.split(".", 1)[0]
            if path not in known and section != "prices":
                raise ConfigError(_unknown_setting(path, known, origin or source_of(path)))
            _set_path(self.data, path, value)
            self.sources[path] = source_of(path)


def _read_config_file(explicit: Path | None, home: Path) -> tuple[Path | None, dict[str, Any]]:
    candidates = (
        [explicit] if explicit else [Path.cwd() / CONFIG_FILE_NAME, home / CONFIG_FILE_NAME]
    )
    for path in candidates:
        # the file named with --config is read whatever it is, so a directory is named as one
        if path is not None and (path.is_file() or (path == explicit and path.exists())):
            from multiagent._inputs import read_text_file

            text = read_text_file(path, what="config file")
            try:
                data = tomllib.loads(text)
            except tomllib.TOMLDecodeError as exc:
                raise ConfigError(f"malformed config file {path}: {exc}") from None
            unknown = sorted(set(data) - set(_TOP_LEVEL) - set(_SECTIONS))
            if unknown:
                valid = _TOP_LEVEL + _SECTIONS
                raise ConfigError(
                    f"unknown key {unknown[0]!r} in {path}{did_you_mean(unknown[0], valid)}; "
                    f"valid: {', '.join(valid)}"
                )
            return path, data
    if explicit is not None:
        raise ConfigError(f"config file {explicit} does not exist")
    return None, {}


def _choose(
    name: str, valid: Mapping[str, Any], layers: list[tuple[str | None, str]]
) -> tuple[str, str]:
    """Pick the last given value of ``name`` among ``layers`` and check it is one of ``valid``."""
    chosen: tuple[str, str] | None = None
    for value, source in layers:
        if value is not None:
            chosen = (value, source)
    assert chosen is not None
    value, source = chosen
    # a TOML file may give any type: a list or table is no name (nor hashable)
    if not isinstance(value, str) or value not in valid:
        raise ConfigError(f"unknown {name} {value!r} (from {source}); valid: {', '.join(valid)}")
    return chosen


def _env_source(path: str) -> str:
    """The variables that set ``path``: its own (``MULTIAGENT_BUDGET__DAILY_USD``), the ones
    below it (a price set one field at a time), else its section's JSON (``MULTIAGENT_PRICES``)."""
    parts = path.split(".", 1) if path.startswith("prices.") else path.split(".")
    names = {name.upper(): name for name in os.environ if name.upper().startswith("MULTIAGENT_")}
    own = "MULTIAGENT_" + "__".join(parts).upper()
    below = sorted(name for upper, name in names.items() if upper.startswith(own + "__"))
    if own in names or below:
        return "env " + ", ".join([names[own]] if own in names else below)
    for count in range(len(parts) - 1, 0, -1):
        name = "MULTIAGENT_" + "__".join(parts[:count]).upper()
        if name in names:
            return f"env {names[name]}"
    return f"env {own}"


def _exact_env_source(path: str, origin: str) -> str:
    """Of the variables ``origin`` names, the one that set ``path`` itself, if one did."""
    if not origin.startswith("env ") or ", " not in origin:
        return origin
    own = "MULTIAGENT_" + path.upper().replace(".", "__")
    named = origin.removeprefix("env ").split(", ")
    return next((f"env {name}" for name in named if name.upper() == own), origin)


def _describe_error(exc: ValidationError, sources: Mapping[str, str], prefix: str = "") -> str:
    return _describe(exc.errors()[0], sources, prefix)


def _check_types(data: Mapping[str, Any], sources: Mapping[str, str], prefix: str = "") -> None:
    """Refuse a value of the wrong type that validation would convert: ``true`` or ``"5"`` in
    ``multiagent.toml`` (or a JSON variable, or an override) for a number, ``1`` for a switch.

    Lax validation reads the strings of ``MULTIAGENT_<SECTION>__<KEY>`` variables; any other
    value already has a type, and converting it would silently run on something not meant
    (``budget_usd = true`` a budget of $1).
    """
    model = SimConfig if prefix else Profile
    try:
        model.model_validate(data, strict=True)
    except ValidationError as exc:
        for err in exc.errors():
            path = prefix + ".".join(str(p) for p in err["loc"])
            from_variable = (_origin(path, sources) or "").startswith("env ")
            if err["type"].endswith("_type") and not (
                isinstance(err["input"], str) and from_variable
            ):
                raise ConfigError(_describe(err, sources, prefix)) from None


def _origin(path: str, sources: Mapping[str, str]) -> str | None:
    """Where the value at ``path`` came from; ``None`` for a whole section or model."""
    origin = sources.get(path)
    parent = path
    while origin is None and "." in parent:  # a field of one value (a price entry)
        parent = parent.rsplit(".", 1)[0]
        origin = sources.get(parent) if parent.startswith("prices.") else None
    return None if origin is None else _exact_env_source(path, origin)


def _describe(err: ErrorDetails, sources: Mapping[str, str], prefix: str) -> str:
    path = prefix + ".".join(str(p) for p in err["loc"])
    origin = _origin(path, sources)
    if origin is None:  # a model-level check: name every source under it
        related = sorted({src for p, src in sources.items() if p.startswith(path)})
        origin = ", ".join(related) or "defaults"
    value = f"={err['input']!r}" if "input" in err and not isinstance(err["input"], dict) else ""
    return f"invalid setting {path}{value} (from {origin}): {err['msg']}"


def load_settings(
    *,
    env: str | None = None,
    policy: str | None = None,
    provider: str | None = None,
    home: str | Path | None = None,
    config_file: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    overrides_source: str | None = None,
) -> Settings:
    """Resolve the active profile, policy, provider and data directory.

    Args:
        env: Profile name, as a CLI flag would give it (wins over everything else).
        policy: Cost policy name, as a CLI flag would give it.
        provider: ``"sim"``, ``"openai"`` or ``"local"``.
        home: The data directory; default ``MULTIAGENT_HOME`` or ``./.multiagent``.
        config_file: A TOML file to use instead of looking for ``multiagent.toml``.
        overrides: Dotted setting paths to values, e.g. ``{"rate_limit.max_concurrency": 4}``.
        overrides_source: Where ``overrides`` came from, as messages and ``sources`` name it
            (``the run context's model``: LangGraph Server's values are not the command line's);
            default: ``cli <path>`` for each.

    Returns:
        The frozen, validated settings with ``sources`` naming where each value came from.

    Raises:
        ConfigError: A name is unknown, a file is malformed, or a value is out of range.
    """
    environ = _read_environment()
    if home is not None and not str(home).strip():
        raise ConfigError("empty data directory (from cli --home); give a path, or leave it out")
    home_path, home_source = (
        (Path(home), "cli")
        if home is not None
        else (Path(environ.home), "env MULTIAGENT_HOME")
        if environ.home
        else (Path(".multiagent"), "default")
    )
    _check_home(home_path, home_source)
    if config_file is not None and not str(config_file).strip():
        raise ConfigError("empty config file (from cli --config); give a path, or leave it out")
    file_path, file_data = _read_config_file(Path(config_file) if config_file else None, home_path)
    for key in ("checkpoint_url", "redis_url"):  # ``str()`` would make a URL of ``true``
        if key in file_data and not isinstance(file_data[key], str):
            raise ConfigError(
                f"invalid {key} {file_data[key]!r} (from file {file_path}): it must be a "
                f'URL in quotes, e.g. {key} = "{_URL_EXAMPLES[key]}"'
            )
    file_source = f"file {file_path}"

    env_name, env_source = _choose(
        "profile",
        BUILTIN_PROFILES,
        [
            (DEFAULT_PROFILE, "default"),
            (file_data.get("env"), file_source),
            (environ.env, "env MULTIAGENT_ENV"),
            (env, "cli --env"),
        ],
    )
    policy_name, policy_source = _choose(
        "policy",
        COST_POLICIES,
        [
            (DEFAULT_POLICY, "default"),
            (file_data.get("policy"), file_source),
            (environ.policy, "env MULTIAGENT_POLICY"),
            (policy, "cli --policy"),
        ],
    )
    provider_name, provider_source = _choose(
        "provider",
        dict.fromkeys(PROVIDERS),
        [
            ("sim", "default"),
            (file_data.get("provider"), file_source),
            (environ.provider, "env MULTIAGENT_PROVIDER"),
            (provider, "cli --provider"),
        ],
    )

    layers = _Layers(BUILTIN_PROFILES[env_name].model_dump(mode="python"), f"profile {env_name}")
    layers.data["sim"] = SimConfig().model_dump()
    layers.sources.update({f"sim.{k}": "default" for k in layers.data["sim"]})
    layers.replace(COST_POLICIES[policy_name].apply(layers.data), f"policy {policy_name}")
    if provider_name == "local":
        layers.replace(for_local_provider(layers.data), "provider local")

    file_values = {k: v for k, v in file_data.items() if k in _SECTIONS or k == "budget_usd"}
    layers.overlay(file_values, lambda _path: file_source, origin=str(file_path))
    env_values = {key: getattr(environ, key) for key in _SECTIONS if getattr(environ, key)}
    if environ.budget_usd is not None:
        env_values["budget_usd"] = environ.budget_usd
    layers.overlay(env_values, _env_source, origin=None)
    cli_values: dict[str, Any] = {}
    for path, value in (overrides or {}).items():
        _set_path(cli_values, path, value)
    layers.overlay(
        cli_values,
        lambda path: overrides_source or f"cli {path}",
        origin=overrides_source or "the command line",
    )

    sim_data = layers.data.pop("sim")
    _check_types(layers.data, layers.sources)
    _check_types(sim_data, layers.sources, "sim.")
    try:
        profile = Profile.model_validate(layers.data)
    except ValidationError as exc:
        raise ConfigError(_describe_error(exc, layers.sources)) from None
    try:
        sim = SimConfig.model_validate(sim_data)
    except ValidationError as exc:
        raise ConfigError(_describe_error(exc, layers.sources, "sim.")) from None

    checkpoint_url = file_data.get("checkpoint_url") or None
    checkpoint_source = file_source
    if environ.checkpoint_url:
        checkpoint_url, checkpoint_source = environ.checkpoint_url, "env MULTIAGENT_CHECKPOINT_URL"
    redis_url = file_data.get("redis_url") or None
    redis_source = file_source
    if environ.redis_url:
        redis_url, redis_source = environ.redis_url, "env MULTIAGENT_REDIS_URL"
    if redis_url is not None:
        check_redis_url(str(redis_url), source=redis_source)
    if checkpoint_url is not None:
        check_checkpoint_url(str(checkpoint_url), source=checkpoint_source)
    for tier in TIERS:  # a model without a price could not be budgeted: refused up front
        model = profile.models.for_tier(tier)
        if profile.price_of(model) is None:
            raise ConfigError(
                f"model {model!r} has no price (tier {tier!r}, from "
                f"{layers.sources.get('models.' + tier)}){did_you_mean(model, profile.prices)}; "
                "priced: "
                f"{', '.join(profile.prices)}; or add its price to [prices] (0 is allowed)"
            )
    sources = dict(layers.sources)
    sources.update(
        env=env_source,
        policy=policy_source,
        provider=provider_source,
        home=home_source,
        checkpoint_url=checkpoint_source if checkpoint_url else "default",
        redis_url=redis_source if redis_url else "default",
    )
    return Settings(
        env=env_name,
        policy=policy_name,
        provider=provider_name,  # type: ignore[arg-type]
        home=home_path,
        checkpoint_url=checkpoint_url,
        redis_url=None if redis_url is None else str(redis_url),
        openai_api_key=SecretStr(environ.openai_api_key) if environ.openai_api_key else None,
        openai_base_url=environ.openai_base_url or None,
        profile=profile,
        sim=sim,
        sources=sources,
    )
