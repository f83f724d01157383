"""Budgets that can never admit a call are refused up front, naming what makes the call dear."""

from __future__ import annotations

from pathlib import Path

import pytest

from multiagent.errors import BudgetExceededError, ConfigError
from multiagent.models.ledger import RunLedger
from multiagent.models.pipeline import ModelPipeline
from multiagent.policies import load_settings


def _config(home: Path, text: str) -> Path:
    home.mkdir(parents=True, exist_ok=True)
    path = home / "multiagent.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_a_node_allowance_no_budget_covers_is_refused_naming_node_source_and_model(
    isolated_env: Path,
) -> None:
    path = _config(isolated_env, "[models.max_output_tokens]\nsynthesize = 100000\n")
    settings = load_settings()
    premium = settings.profile.models.premium
    pipeline = ModelPipeline(settings)
    calls = [("plan", "standard"), ("work", "standard"), ("synthesize", "premium")]
    with pytest.raises(ConfigError) as caught:
        pipeline.check_budget(0.05, source="--budget", calls=calls)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("budget $0.05 (from --budget) cannot cover one call of node ")
    assert "synthesize: max_tokens 100000" in message
    assert f"(from file {path} models.max_output_tokens.synthesize)" in message
    assert f"at {premium} costs $" in message
    # the smallest allowance at every tier (the check before) lets this budget through
    pipeline.check_budget(0.05, source="--budget")


def test_only_the_calls_the_command_makes_are_checked(isolated_env: Path) -> None:
    _config(isolated_env, "[models.max_output_tokens]\nwork = 10000000\n")
    pipeline = ModelPipeline(load_settings())
    with pytest.raises(ConfigError, match=r"node work: max_tokens 10000000"):
        pipeline.check_budget(2.0, source="profile", calls=[("work", "standard")])
    pipeline.check_budget(2.0, source="profile", calls=[("validate", "fast")])


def test_a_refusal_names_only_models_the_command_uses() -> None:
    settings = load_settings()
    fast = settings.profile.models.fast
    calls = [("plan", "standard"), ("work", "standard"), ("synthesize", "premium")]
    assert fast not in {settings.profile.models.for_tier(t) for _, t in calls}
    with pytest.raises(ConfigError) as caught:
        ModelPipeline(settings, calls=calls).check_budget(0.00001, source="--budget")
    assert fast not in str(caught.value)


def test_budgets_that_cover_every_call_pass() -> None:
    pipeline = ModelPipeline(load_settings(env="dev_cost"))
    # 0.0017 covers any one call of the cheap profile (the budget-stop tests rely on it)
    calls = [("plan", "standard"), ("work", "standard"), ("synthesize", "premium")]
    pipeline.check_budget(0.0017, source="--budget", calls=calls)


def test_a_daily_budget_names_its_key_and_file(isolated_env: Path) -> None:
    path = _config(isolated_env, "[budget]\ndaily_usd = 0.00001\n")
    with pytest.raises(ConfigError) as caught:
        ModelPipeline(load_settings(), calls=[("synthesize", "premium")])
    message = str(caught.value)
    assert f"budget $1e-05 (from file {path} budget.daily_usd) cannot cover" in message
    assert "node synthesize" in message


def test_a_daily_budget_from_a_section_variable_names_its_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MULTIAGENT_BUDGET", '{"daily_usd": 0.00001}')
    with pytest.raises(ConfigError, match=r"\(from env MULTIAGENT_BUDGET budget\.daily_usd\)"):
        ModelPipeline(load_settings())
    monkeypatch.delenv("MULTIAGENT_BUDGET")
    monkeypatch.setenv("MULTIAGENT_BUDGET__DAILY_USD", "0.00001")
    with pytest.raises(ConfigError, match=r"\(from env MULTIAGENT_BUDGET__DAILY_USD\) cannot"):
        ModelPipeline(load_settings())


def test_a_resumed_run_names_the_given_budget_and_the_spend_before_it() -> None:
    ledger = RunLedger(budget_usd=0.0005 - 0.000084, spent_before=0.000084, given_usd=0.0005)
    with pytest.raises(BudgetExceededError) as caught:
        ledger.reserve(0.000625)
    message = str(caught.value)
    assert message.startswith(
        "budget of $0.0005 reached: spent $0.000084 before this session and $0.000000 in it"
    )
    assert "$0.0004" not in message


def test_a_fresh_run_keeps_its_wording() -> None:
    with pytest.raises(BudgetExceededError, match=r"^budget of \$0\.0005 reached: spent \$0\.0"):
        RunLedger(budget_usd=0.0005).reserve(0.001)


@pytest.mark.parametrize("budget", [0.00005, 0.00025, 1.5e-07])
def test_the_budget_reached_is_named_as_given_not_rounded(budget: float) -> None:
    with pytest.raises(BudgetExceededError) as caught:
        RunLedger(budget_usd=budget).reserve(0.001)
    assert str(caught.value).startswith(f"budget of ${budget:g} reached: spent $0.0")
