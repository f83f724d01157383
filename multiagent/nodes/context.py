"""What every node of a run shares and never keeps in state: the run context.

The context is passed to a compiled graph as ``context=`` and read in nodes through
``Runtime[WorkflowContext]``. It holds settings (loaded once, by the caller), the model pipeline,
the run's ledger (tokens, cost, budget), the agent catalogue, and the optional agent memory and
analysis cache. Nodes never read the environment.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import BaseMessage
from langchain_core.runnables import Runnable
from langgraph.runtime import Runtime

from multiagent.errors import UsageError
from multiagent.models.analysis_cache import AnalysisCache
from multiagent.models.pipeline import ModelPipeline, RunLedger
from multiagent.nodes.agents import AgentSpec
from multiagent.nodes.agents_file import AgentCatalog, load_agents
from multiagent.policies import Settings, load_settings


@runtime_checkable
class AgentMemory(Protocol):
    """Long-term memory per agent: recalled before acting, written after."""

    def recall(self, agent: str, query: str, *, k: int = 3) -> list[str]:
        """Return up to ``k`` texts the agent stored that are relevant to ``query``."""
        ...

    def remember(
        self, agent: str, texts: list[str], *, metadata: dict[str, str] | None = None
    ) -> None:
        """Store ``texts`` in the agent's memory."""
        ...


class _Default:
    """The type of :data:`DEFAULT`: "not given", which differs from ``None`` ("none")."""


DEFAULT = _Default()


@dataclass(frozen=True)
class WorkflowContext:
    """Run-scoped configuration, separate from state.

    Attributes:
        settings: Resolved settings.
        pipeline: Hands out every model a node calls.
        agents: The agent catalogue (built-ins plus ``agents.toml``).
        ledger: Tokens, cost and calls of this run; its budget stops the run before it is passed.
        memory: Agent long-term memory, or ``None`` to run without it.
        analysis_cache: Where validators reuse verdicts on identical content, or ``None``.
    """

    settings: Settings
    pipeline: ModelPipeline
    agents: AgentCatalog
    ledger: RunLedger = field(default_factory=RunLedger)
    memory: AgentMemory | None = None
    analysis_cache: AnalysisCache | None = None

    def model(self, agent: AgentSpec) -> Runnable[LanguageModelInput, BaseMessage]:
        """Return the model ``agent`` calls, through the pipeline and accounted to this run."""
        return self.pipeline.model_for(agent.tier, agent=agent.name, ledger=self.ledger)

    def model_name(self, agent: AgentSpec) -> str:
        """The provider model name ``agent`` calls (its tier's, or the pipeline's own model)."""
        return self.pipeline.model_name(agent.tier)


def build_context(
    settings: Settings,
    *,
    agents: AgentCatalog | None = None,
    budget_usd: float | None = None,
    pipeline: ModelPipeline | None = None,
    memory: AgentMemory | None = None,
    analysis_cache: AnalysisCache | _Default | None = DEFAULT,
    model: BaseChatModel | str | None = None,
) -> WorkflowContext:
    """Assemble a run context.

    Args:
        settings: Resolved settings.
        agents: The catalogue; default: built-ins plus ``agents.toml`` in ``settings.home``.
        budget_usd: What the run may spend; default: the profile's ``budget_usd``.
        pipeline: Share one pipeline between runs in a process; default: a new one.
        memory: Agent long-term memory.
        analysis_cache: Where validators reuse verdicts; default: the pipeline's analysis
            cache under ``settings.home`` (a pass-through when the profile switches it off);
            ``None`` for none.
        model: The chat model every agent calls (any LangChain chat model or an
            ``init_chat_model`` string), for a new pipeline; see
            :class:`~multiagent.models.pipeline.ModelPipeline`.
    """
    budget = settings.profile.budget_usd if budget_usd is None else budget_usd
    if pipeline is not None and model is not None:
        raise UsageError("give build_context a model or a pipeline, not both")
    pipeline = pipeline or ModelPipeline(settings, model=model)
    if isinstance(analysis_cache, _Default):
        analysis_cache = pipeline.analysis_cache
    return WorkflowContext(
        settings=settings,
        pipeline=pipeline,
        agents=agents if agents is not None else load_agents(settings),
        ledger=RunLedger(budget_usd=budget),
        memory=memory,
        analysis_cache=analysis_cache,
    )


@functools.cache
def _process_defaults() -> tuple[Settings, ModelPipeline, AgentCatalog]:
    settings = load_settings()
    return settings, ModelPipeline(settings), load_agents(settings)


def context_of(runtime: Runtime[WorkflowContext]) -> WorkflowContext:
    """The run's context; a graph run without one (LangGraph Studio) gets the process defaults.

    Settings for that case are loaded once per process, not per node; each node call then gets
    a fresh ledger with the profile's budget.
    """
    if runtime.context is not None:
        return runtime.context
    settings, pipeline, agents = _process_defaults()
    return WorkflowContext(
        settings=settings,
        pipeline=pipeline,
        agents=agents,
        ledger=RunLedger(budget_usd=settings.profile.budget_usd),
    )
