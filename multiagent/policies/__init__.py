"""Environment profiles, cost policies and settings resolution."""

from multiagent.policies.policies import COST_POLICIES, DEFAULT_POLICY, CostPolicy
from multiagent.policies.profiles import (
    BUILTIN_PROFILES,
    DEFAULT_PROFILE,
    MODEL_LADDER,
    TIERS,
    BudgetConfig,
    CacheConfig,
    Features,
    MemoryConfig,
    ModelPrice,
    ModelTiers,
    Profile,
    RateLimitConfig,
    Tier,
    ValidationConfig,
)
from multiagent.policies.settings import PROVIDERS, Provider, Settings, SimConfig, load_settings

__all__ = [
    "BUILTIN_PROFILES",
    "COST_POLICIES",
    "DEFAULT_POLICY",
    "DEFAULT_PROFILE",
    "MODEL_LADDER",
    "PROVIDERS",
    "TIERS",
    "BudgetConfig",
    "CacheConfig",
    "CostPolicy",
    "Features",
    "MemoryConfig",
    "ModelPrice",
    "ModelTiers",
    "Profile",
    "Provider",
    "RateLimitConfig",
    "Settings",
    "SimConfig",
    "Tier",
    "ValidationConfig",
    "load_settings",
]
