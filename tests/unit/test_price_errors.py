"""A bad price from the environment names the variable that was set, and the field."""

from __future__ import annotations

import pytest

from multiagent.errors import ConfigError
from multiagent.policies import load_settings


def test_a_price_in_the_section_json_names_that_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "MULTIAGENT_PRICES", '{"gpt-4o-mini": {"input_per_mtok": -1, "output_per_mtok": 1}}'
    )
    with pytest.raises(ConfigError) as caught:
        load_settings()
    message = str(caught.value)
    assert "prices.gpt-4o-mini.input_per_mtok=-1 (from env MULTIAGENT_PRICES)" in message
    assert "MULTIAGENT_PRICES__" not in message


@pytest.mark.parametrize("field", ["input_per_mtok", "output_per_mtok"])
def test_a_price_field_variable_is_named_itself(
    monkeypatch: pytest.MonkeyPatch, field: str
) -> None:
    for name in ("input_per_mtok", "output_per_mtok"):
        value = "-1" if name == field else "1"
        monkeypatch.setenv(f"MULTIAGENT_PRICES__GPT-4O-MINI__{name.upper()}", value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    variable = f"MULTIAGENT_PRICES__GPT-4O-MINI__{field.upper()}"
    assert f"prices.gpt-4o-mini.{field}='-1' (from env {variable})" in str(caught.value)


def test_a_valid_price_variable_is_the_source_of_its_entry(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MULTIAGENT_PRICES__GPT-4O-MINI__INPUT_PER_MTOK", "0.2")
    monkeypatch.setenv("MULTIAGENT_PRICES__GPT-4O-MINI__OUTPUT_PER_MTOK", "0.8")
    settings = load_settings()
    assert settings.profile.require_price("gpt-4o-mini").input_per_mtok == 0.2
    assert settings.sources["prices.gpt-4o-mini"] == (
        "env MULTIAGENT_PRICES__GPT-4O-MINI__INPUT_PER_MTOK, "
        "MULTIAGENT_PRICES__GPT-4O-MINI__OUTPUT_PER_MTOK"
    )
