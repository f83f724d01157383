"""The serialisable run context: what LangGraph Server (and Studio) can send as JSON.

A graph's ``context_schema`` is :class:`RunContext`: every field has a default, so the server's
``context={}`` (or none at all) runs with the process's settings. The heavy objects a run needs
(settings, the model pipeline, the agent catalogue, agent memory) are built from these values by
:func:`multiagent.nodes.context.context_of`, once per process for each distinct set of values.
Code in the same process may pass the rich :class:`~multiagent.nodes.context.WorkflowContext`
instead; nodes accept either.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from multiagent.policies import Provider

#: The profiles a context may name (the built-in ones; a unit test keeps the two lists equal).
ProfileName = Literal[
    "dev_cost", "dev_balanced", "staging_quality", "prod_balanced", "prod_quality"
]
#: The cost policies a context may name.
PolicyName = Literal["cost_optimized", "balanced", "quality_optimized"]
#: Where agents' long-term memory lives: ``auto`` is the server's store when the run has one,
#: else Chroma with the best installed embedder; ``minilm``/``lexical`` choose Chroma's embedder
#: (the server's store, when there is one, embeds with its own index); ``off`` for none.
MemoryMode = Literal["auto", "minilm", "lexical", "off"]
MEMORY_MODES: tuple[MemoryMode, ...] = ("auto", "minilm", "lexical", "off")


class RunContext(BaseModel):
    """Run configuration as plain values, each with a default.

    Attributes:
        profile: Environment profile; default: ``MULTIAGENT_ENV``, the config file, or
            ``dev_balanced``.
        policy: Cost policy; default: ``MULTIAGENT_POLICY``, the config file, or the profile's.
        provider: Model provider; default: ``MULTIAGENT_PROVIDER`` or ``sim``.
        model: A model name every tier calls instead of the profile's (it needs a price in the
            profile); default: the profile's model per tier.
        budget_usd: What one run may spend; default: the profile's ``budget_usd``.
        memory: Agents' long-term memory (see :data:`MemoryMode`).
        agents_file: An ``agents.toml`` to read; default: the one in ``MULTIAGENT_HOME``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    profile: ProfileName | None = Field(default=None, description="Environment profile.")
    policy: PolicyName | None = Field(default=None, description="Cost policy.")
    provider: Provider | None = Field(default=None, description="Model provider.")
    model: str | None = Field(
        default=None, min_length=1, description="One model name for every tier (priced)."
    )
    budget_usd: float | None = Field(
        default=None, ge=0.0, allow_inf_nan=False, description="USD one run may spend."
    )
    memory: MemoryMode = Field(default="auto", description="Agents' long-term memory.")
    agents_file: str | None = Field(
        default=None, min_length=1, description="Path of an agents.toml to read."
    )
