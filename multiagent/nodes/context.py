"""What every node of a run shares and never keeps in state: the run context.

The context is passed to a compiled graph as ``context=`` and read in nodes through
:func:`context_of`. It holds settings (loaded once, by the caller), the model pipeline, the run's
ledger (tokens, cost, budget), the agent catalogue, and the optional agent memory and analysis
cache. Nodes never read the environment.

A caller in the same process passes a :class:`WorkflowContext` (see :func:`build_context`).
LangGraph Server sends plain values instead, which the graphs declare as their
``context_schema``: :class:`~multiagent.nodes.run_context.RunContext`. :func:`context_of` turns
either (or none) into the rich context; the heavy objects are built once per process for each
distinct set of values.
"""

from __future__ import annotations

import atexit
import functools
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import BaseMessage
from langchain_core.runnables import Runnable
from langgraph.config import get_config
from langgraph.runtime import Runtime
from langgraph.store.base import BaseStore

from multiagent.errors import UsageError
from multiagent.models.analysis_cache import AnalysisCache
from multiagent.models.backpressure import BackpressureConfig
from multiagent.models.pipeline import ModelPipeline, RunLedger
from multiagent.nodes.agents import AgentSpec
from multiagent.nodes.agents_file import AgentCatalog, load_agents
from multiagent.nodes.run_context import RunContext
from multiagent.policies import TIERS, Settings, load_settings


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
    model: BaseChatModel | Runnable[Any, Any] | str | None = None,
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


#: What a graph accepts as ``context``: the rich context, or plain values (LangGraph Server).
AnyContext = WorkflowContext | RunContext

#: Ledgers of runs in progress, by run id (or, in process, the run's own control object), so
#: every node of one run shares one budget; with when a node last asked for each. Past
#: ``_LEDGERS_KEPT`` the least recent go, but only one idle for ``_LEDGER_IDLE_S`` with nothing
#: reserved: a long run on a busy server keeps its budget (its nodes follow each other within
#: seconds, and a call in flight holds a reservation).
_LEDGERS_KEPT = 256
_LEDGER_IDLE_S = 600.0
_ledgers: OrderedDict[object, tuple[RunLedger, float]] = OrderedDict()
_ledgers_lock = threading.Lock()


@functools.lru_cache(maxsize=16)
def _heavy_objects(
    profile: str | None,
    policy: str | None,
    provider: str | None,
    model: str | None,
    agents_file: str | None,
) -> tuple[Settings, ModelPipeline, AgentCatalog]:
    """Settings, pipeline and catalogue for one set of context values, built once per process."""
    overrides = {f"models.{tier}": model for tier in TIERS} if model else None
    settings = load_settings(
        env=profile,
        policy=policy,
        provider=provider,
        overrides=overrides,
        overrides_source="the run context's model",  # not the CLI's: messages name it
    )
    # a provider's capacity does not change with the profile that calls it, and this process
    # keeps one backpressure controller per provider and model: every context's pipeline uses
    # the process's own rate limits (the settings a run without context values gets)
    rate_limits = BackpressureConfig.from_profile(_process_settings().profile.rate_limit)
    pipeline = ModelPipeline(settings, backpressure=rate_limits)
    return settings, pipeline, load_agents(settings, agents_file=agents_file)


@functools.lru_cache(maxsize=1)
def _process_settings() -> Settings:
    """The settings of a run that chooses nothing (environment, config file, defaults)."""
    return load_settings()


_embedded: dict[tuple[str, str], AgentMemory] = {}
_embedded_lock = threading.Lock()


def _embedded_memory(settings: Settings, mode: str) -> AgentMemory:
    """Chroma under ``settings.home``, opened once per process, data directory and embedder."""
    from multiagent.persistence.memory_background import open_agent_memory_in_background

    key = (str(settings.home), mode)
    with _embedded_lock:
        if key not in _embedded:
            _embedded[key] = open_agent_memory_in_background(settings, embeddings=mode)
        return _embedded[key]


@atexit.register
def clear_context_cache() -> None:
    """Forget the heavy objects built from context values, and close the memories opened.

    Runs when the process ends; tests call it to start from a clean process state.
    """
    _heavy_objects.cache_clear()
    _process_settings.cache_clear()
    with _ledgers_lock:
        _ledgers.clear()
    with _embedded_lock:
        opened = list(_embedded.values())
        _embedded.clear()
    for memory in opened:
        close = getattr(memory, "close", None)
        if callable(close):
            close()


def _memory(
    spec: RunContext, settings: Settings, store: BaseStore | None, *, embedded: bool
) -> AgentMemory | None:
    """The run's store when there is one, else (when ``embedded``) Chroma; none when off."""
    if spec.memory == "off":
        return None
    if store is not None:
        from multiagent.persistence.store_memory import StoreAgentMemory

        return StoreAgentMemory(store)
    return _embedded_memory(settings, spec.memory) if embedded else None


def _run_ledger(budget_usd: float | None, run: object | None) -> RunLedger:
    """The ledger of the current run, so its nodes share one budget; a fresh one per call when
    nothing identifies the run.

    A run is known by its run id (LangGraph Server puts one in the config), else by ``run``:
    the :class:`~langgraph.runtime.RunControl` LangGraph makes for each ``invoke``/``stream``
    and hands to every node of it (an in-process run's config carries no run id). The key
    holds the object itself, so a finished run's id cannot be taken for a new one's.
    """
    try:
        config = get_config()
    except RuntimeError:  # called outside a run
        config = {}
    run_id = config.get("run_id") or config.get("configurable", {}).get("run_id")
    key = str(run_id) if run_id is not None else run
    if key is None:
        return RunLedger(budget_usd=budget_usd)
    now = time.monotonic()
    with _ledgers_lock:
        found = _ledgers.pop(key, None)
        ledger = found[0] if found is not None else RunLedger(budget_usd=budget_usd)
        _ledgers[key] = (ledger, now)  # the most recent, last
        excess = len(_ledgers) - _LEDGERS_KEPT
        for old_key, (old, touched) in list(_ledgers.items())[: max(excess, 0)]:
            if now - touched < _LEDGER_IDLE_S:
                break  # the rest are more recent still
            if not old.reserved_usd:
                del _ledgers[old_key]
        return ledger


def resolve_context(
    spec: RunContext,
    *,
    store: BaseStore | None = None,
    embedded_memory: bool = True,
    run: object | None = None,
) -> WorkflowContext:
    """Build the rich context from plain values; the heavy objects are cached per process.

    Args:
        spec: The values (each defaulted).
        store: The run's LangGraph store; agents remember there when it is given.
        embedded_memory: Open Chroma when there is no store (and memory is not ``off``).
        run: What identifies the run when its config has no run id (the runtime's
            ``control``): every node of one run then draws on one ledger and one budget.

    Raises:
        ConfigError: A value the settings reject (an unpriced ``model``, a missing agents file).
    """
    settings, pipeline, agents = _heavy_objects(
        spec.profile, spec.policy, spec.provider, spec.model, spec.agents_file
    )
    budget = settings.profile.budget_usd if spec.budget_usd is None else spec.budget_usd
    return WorkflowContext(
        settings=settings,
        pipeline=pipeline,
        agents=agents,
        ledger=_run_ledger(budget, run),
        memory=_memory(spec, settings, store, embedded=embedded_memory),
        analysis_cache=pipeline.analysis_cache,
    )


def context_of(runtime: Runtime[Any]) -> WorkflowContext:
    """The run's :class:`WorkflowContext`, whatever form the caller gave it in.

    A :class:`WorkflowContext` is used as it is. Plain values (a :class:`RunContext`, or a dict
    of its fields) are resolved by :func:`resolve_context`, with the run's store as agent memory
    when the run has one. A run without a context (``invoke()`` with none) gets the defaults and
    no embedded memory: a store still serves as memory when the graph was compiled with one.
    """
    given = runtime.context
    if isinstance(given, WorkflowContext):
        return given
    run = runtime.control  # one per invoke/stream, shared by its nodes (and subgraphs)
    if given is None:
        return resolve_context(RunContext(), store=runtime.store, embedded_memory=False, run=run)
    spec = given if isinstance(given, RunContext) else RunContext.model_validate(given)
    return resolve_context(spec, store=runtime.store, run=run)
