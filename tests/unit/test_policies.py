from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from multiagent.errors import ConfigError, UsageError
from multiagent.policies import (
    BUILTIN_PROFILES,
    COST_POLICIES,
    MODEL_LADDER,
    ModelPrice,
    load_settings,
)


@pytest.mark.parametrize(
    ("env", "policy"), list(itertools.product(BUILTIN_PROFILES, COST_POLICIES))
)
def test_every_profile_and_policy_resolves(env: str, policy: str) -> None:
    settings = load_settings(env=env, policy=policy)
    base = BUILTIN_PROFILES[env]
    profile = settings.profile
    assert settings.env == env
    assert settings.policy == policy
    assert 1 <= profile.validation.validators_min <= profile.validation.validators_max <= 6
    assert 0 < profile.validation.consensus_threshold <= 1
    ladder = {m: i for i, m in enumerate(MODEL_LADDER)}
    for tier in ("fast", "standard", "premium"):
        shift = ladder[profile.models.for_tier(tier)] - ladder[base.models.for_tier(tier)]
        if policy == "cost_optimized":
            assert shift <= 0
            assert profile.budget_usd == pytest.approx(base.budget_usd / 2)
        elif policy == "quality_optimized":
            assert shift >= 0
            assert profile.budget_usd == pytest.approx(base.budget_usd * 2)
        else:
            assert shift == 0
            assert profile == base
    assert settings.sources["env"] == "cli --env"


def test_builtin_profiles_follow_the_seed() -> None:
    ranges = {
        name: (p.validation.validators_min, p.validation.validators_max)
        for name, p in BUILTIN_PROFILES.items()
    }
    assert ranges == {
        "dev_cost": (1, 2),
        "dev_balanced": (2, 3),
        "staging_quality": (3, 5),
        "prod_balanced": (2, 4),
        "prod_quality": (3, 6),
    }
    for profile in BUILTIN_PROFILES.values():
        assert 5 <= profile.rate_limit.max_concurrency <= 8
        assert profile.rate_limit.error_rate_threshold == 0.10
        assert profile.rate_limit.rtt_threshold_s == 5.0
        assert profile.rate_limit.max_wait_multiplier == 3.0
        assert profile.memory.snapshot_interval_hours == 6
        assert profile.memory.snapshots_per_agent == 10


def test_defaults_and_sources() -> None:
    settings = load_settings()
    assert (settings.env, settings.policy, settings.provider) == ("dev_balanced", "balanced", "sim")
    assert settings.sources["env"] == "default"
    assert settings.sources["rate_limit.max_concurrency"] == "profile dev_balanced"
    assert settings.sources["home"] == "env MULTIAGENT_HOME"


def test_precedence_of_every_source(monkeypatch: pytest.MonkeyPatch, isolated_env: Path) -> None:
    home_file = isolated_env / "multiagent.toml"
    home_file.parent.mkdir(parents=True, exist_ok=True)
    home_file.write_text(
        'env = "dev_cost"\n[rate_limit]\nmax_concurrency = 7\nretry_attempts = 9\n'
    )
    settings = load_settings()
    assert settings.env == "dev_cost"
    assert settings.sources["env"] == f"file {home_file}"
    assert settings.profile.rate_limit.max_concurrency == 7

    # the working directory's file is found before the home's
    Path("multiagent.toml").write_text(
        'env = "staging_quality"\npolicy = "cost_optimized"\n[rate_limit]\nmax_concurrency = 6\n'
    )
    settings = load_settings()
    assert (settings.env, settings.policy) == ("staging_quality", "cost_optimized")
    assert settings.profile.rate_limit.max_concurrency == 6
    assert settings.profile.rate_limit.retry_attempts == 5  # home file not read
    assert settings.sources["models.fast"] == "policy cost_optimized"

    monkeypatch.setenv("MULTIAGENT_ENV", "prod_quality")
    monkeypatch.setenv("MULTIAGENT_POLICY", "balanced")
    monkeypatch.setenv("MULTIAGENT_RATE_LIMIT__MAX_CONCURRENCY", "5")
    settings = load_settings()
    assert (settings.env, settings.policy) == ("prod_quality", "balanced")
    assert settings.profile.rate_limit.max_concurrency == 5
    assert (
        settings.sources["rate_limit.max_concurrency"]
        == "env MULTIAGENT_RATE_LIMIT__MAX_CONCURRENCY"
    )

    settings = load_settings(
        env="dev_cost", policy="quality_optimized", overrides={"rate_limit.max_concurrency": 8}
    )
    assert (settings.env, settings.policy) == ("dev_cost", "quality_optimized")
    assert settings.profile.rate_limit.max_concurrency == 8
    assert settings.sources["rate_limit.max_concurrency"] == "cli rate_limit.max_concurrency"
    assert settings.sources["env"] == "cli --env"


def test_price_overrides_keep_dotted_model_names() -> None:
    settings = load_settings(
        overrides={"prices.gpt-3.5-turbo": {"input_per_mtok": 1, "output_per_mtok": 2}}
    )
    price = settings.profile.price_of("gpt-3.5-turbo")
    assert price is not None
    assert price.cost(1_000_000, 1_000_000) == pytest.approx(3.0)
    assert settings.profile.price_of("gpt-4o") is not None


@pytest.mark.parametrize(
    ("kwargs", "env", "message"),
    [
        ({"env": "nope"}, {}, "unknown profile 'nope' (from cli --env); valid: dev_cost"),
        ({}, {"MULTIAGENT_POLICY": "cheap"}, "unknown policy 'cheap' (from env MULTIAGENT_POLICY)"),
        ({"provider": "anthropic"}, {}, "unknown provider 'anthropic'"),
        (
            {"overrides": {"validation.validators_min": 5}},
            {},
            "validators_min (5) is above validators_max (3)",
        ),
        ({}, {"MULTIAGENT_BUDGET_USD": "-1"}, "budget_usd='-1' (from env MULTIAGENT_BUDGET_USD)"),
        (
            {"overrides": {"validation.consensus_threshold": 1.5}},
            {},
            "consensus_threshold=1.5 (from cli",
        ),
        ({"overrides": {"validation.consensus_threshold": 0}}, {}, "greater than 0"),
        ({"overrides": {"rate_limit.bogus": 1}}, {}, "unknown setting 'rate_limit.bogus'"),
        ({}, {"MULTIAGENT_SIM__TTFT_S": "-2"}, "sim.ttft_s='-2' (from env MULTIAGENT_SIM__TTFT_S)"),
        ({}, {"MULTIAGENT_SIM__TTFT_S": "inf"}, "sim.ttft_s='inf' (from env"),
        ({}, {"MULTIAGENT_CACHE__COMPLETION_TTL_S": "1e999"}, "completion_ttl_s='1e999'"),
        ({}, {"MULTIAGENT_RATE_LIMIT__REQUEST_TIMEOUT_S": "inf"}, "finite number"),
        ({"overrides": {"memory.thread_max_age_days": float("inf")}}, {}, "finite number"),
    ],
)
def test_bad_values_name_value_source_and_valid_range(
    monkeypatch: pytest.MonkeyPatch, kwargs: dict[str, object], env: dict[str, str], message: str
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ConfigError) as info:
        load_settings(**kwargs)  # type: ignore[arg-type]
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_malformed_and_unknown_config_file() -> None:
    Path("multiagent.toml").write_text("[rate_limit\n")
    with pytest.raises(ConfigError, match=r"malformed .*multiagent.toml"):
        load_settings()
    Path("multiagent.toml").write_text("colour = 'blue'\n")
    with pytest.raises(ConfigError, match=r"unknown key 'colour'"):
        load_settings()
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(config_file="missing.toml")


def test_a_config_file_that_is_a_directory_says_so(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=f"^config file {tmp_path} is a directory; give a file$"):
        load_settings(config_file=tmp_path)


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("budget_usd = true", "invalid setting budget_usd=True (from file "),
        ("[rate_limit]\nmax_concurrency = true", "rate_limit.max_concurrency=True (from file "),
        ("[features]\nstreaming = 1", "features.streaming=1 (from file "),
        ("[features]\npii_redaction = 'yes'", "features.pii_redaction='yes' (from file "),
        ("[budget]\ndaily_usd = '5'", "budget.daily_usd='5' (from file "),
        ("[sim]\nseed = true", "sim.seed=True (from file "),
        (
            "[prices.local]\ninput_per_mtok = '0'\noutput_per_mtok = 0",
            "prices.local.input_per_mtok='0' (from file ",
        ),
    ],
)
def test_a_config_value_of_the_wrong_type_is_refused_not_converted(toml: str, message: str) -> None:
    # ``budget_usd = true`` ran on a budget of $1, ``streaming = 1`` switched streaming on
    Path("multiagent.toml").write_text(toml + "\n")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert message in str(info.value)
    assert "multiagent.toml" in str(info.value)


def test_a_json_variable_of_the_wrong_type_is_refused_and_strings_still_parse(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MULTIAGENT_RATE_LIMIT", '{"max_concurrency": true}')
    with pytest.raises(
        ConfigError, match=r"max_concurrency=True \(from env MULTIAGENT_RATE_LIMIT\)"
    ):
        load_settings()
    # a variable's text is read as the field's type, as before
    monkeypatch.setenv("MULTIAGENT_RATE_LIMIT", '{"max_concurrency": "4"}')
    monkeypatch.setenv("MULTIAGENT_FEATURES__STREAMING", "false")
    monkeypatch.setenv("MULTIAGENT_PRICES__mine__input_per_mtok", "0")
    monkeypatch.setenv("MULTIAGENT_PRICES__mine__output_per_mtok", "0.5")
    monkeypatch.setenv("MULTIAGENT_MODELS__FAST", "mine")
    settings = load_settings()
    assert settings.profile.rate_limit.max_concurrency == 4
    assert settings.profile.features.streaming is False
    assert settings.profile.price_of("mine") == ModelPrice(input_per_mtok=0, output_per_mtok=0.5)


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('policy = ["balanced"]', "unknown policy ['balanced'] (from file "),
        ("env = { name = 'dev_cost' }", "unknown profile {'name': 'dev_cost'} (from file "),
        ("provider = ['sim']", "unknown provider ['sim'] (from file "),
        ("redis_url = true", "invalid redis_url True (from file "),
        ("checkpoint_url = 5432", "invalid checkpoint_url 5432 (from file "),
    ],
)
def test_a_name_or_url_that_is_no_string_is_one_line(toml: str, message: str) -> None:
    # a list or table raised TypeError (unhashable); a number or boolean became a URL
    Path("multiagent.toml").write_text(toml + "\n")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_an_empty_config_path_is_refused_not_ignored() -> None:
    Path("multiagent.toml").write_text('env = "prod_quality"\n')
    with pytest.raises(ConfigError, match=r"^empty config file \(from cli --config\)"):
        load_settings(config_file="")


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("MULTIAGENT_BUDGET__DAILYUSD", "5"),
        ("MULTIAGENT_BUDGET", '{"dailyusd": 5}'),
    ],
)
def test_an_unknown_key_in_a_variable_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert f"unknown setting 'budget.dailyusd' in env {variable} " in str(info.value)
    assert "did you mean 'budget.daily_usd'?" in str(info.value)
