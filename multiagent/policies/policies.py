"""Cost policies: transformations of a profile towards cheaper or better answers.

A policy works on the plain-dict form of a profile so that :mod:`multiagent.policies.settings`
can record which values it changed.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from multiagent.policies.profiles import MODEL_LADDER, TIERS

ProfileData = dict[str, Any]


def _shift_model(model: str, steps: int) -> str:
    """Move ``model`` along the ladder; a model not on the ladder stays as it is."""
    if model not in MODEL_LADDER:
        return model
    index = min(max(MODEL_LADDER.index(model) + steps, 0), len(MODEL_LADDER) - 1)
    return MODEL_LADDER[index]


def _cost_optimized(data: ProfileData) -> ProfileData:
    out = copy.deepcopy(data)
    for tier in TIERS:
        out["models"][tier] = _shift_model(out["models"][tier], -1)
    validation = out["validation"]
    validation["validators_min"] = max(1, validation["validators_min"] - 1)
    validation["validators_max"] = max(
        validation["validators_min"], validation["validators_max"] - 1
    )
    out["budget_usd"] = round(out["budget_usd"] * 0.5, 4)
    out["cache"]["completion_ttl_s"] = out["cache"]["completion_ttl_s"] * 2
    out["cache"]["analysis_ttl_s"] = out["cache"]["analysis_ttl_s"] * 2
    return out


def _balanced(data: ProfileData) -> ProfileData:
    return copy.deepcopy(data)


def _quality_optimized(data: ProfileData) -> ProfileData:
    out = copy.deepcopy(data)
    for tier in TIERS:
        out["models"][tier] = _shift_model(out["models"][tier], +1)
    validation = out["validation"]
    validation["validators_max"] = min(6, validation["validators_max"] + 1)
    validation["validators_min"] = min(
        validation["validators_max"], validation["validators_min"] + 1
    )
    validation["consensus_threshold"] = round(min(1.0, validation["consensus_threshold"] + 0.1), 4)
    out["budget_usd"] = round(out["budget_usd"] * 2.0, 4)
    out["rate_limit"]["retry_attempts"] = min(20, out["rate_limit"]["retry_attempts"] + 1)
    return out


@dataclass(frozen=True)
class CostPolicy:
    """A named transformation of a profile."""

    name: str
    description: str
    apply: Callable[[ProfileData], ProfileData]


COST_POLICIES: dict[str, CostPolicy] = {
    "cost_optimized": CostPolicy(
        "cost_optimized",
        "One model tier cheaper, one validator fewer, half the budget, caches kept twice as long.",
        _cost_optimized,
    ),
    "balanced": CostPolicy("balanced", "The profile as it is.", _balanced),
    "quality_optimized": CostPolicy(
        "quality_optimized",
        "One model tier better, one validator more, stricter consensus, twice the budget.",
        _quality_optimized,
    ),
}

DEFAULT_POLICY = "balanced"
