"""The one path every model call from a node takes.

``redact → completion cache lookup → adaptive backpressure (shared per provider+model) → retry
→ provider``, recording tokens, cost, latency, errors and cache hits into the run's ledger and
the process's metrics store. Nodes get their model from :meth:`ModelPipeline.model_for` and call
``invoke``/``ainvoke`` on it; LangGraph's ``messages`` stream mode still delivers tokens, and the
cache is still consulted first (see :mod:`multiagent.models.pipeline_model`).

Retries sit *outside* the backpressure step in the sense that matters: every attempt passes the
controller again, so a retry is paced and waits out a provider pause like any first attempt.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, cast

from langchain_core.language_models import BaseChatModel
from langchain_core.runnables import Runnable

from multiagent.errors import ConfigError
from multiagent.models._chain_call import dearest
from multiagent.models._chain_members import chat_models_in
from multiagent.models._controllers import check_shared_controller
from multiagent.models._in_flight import GatedController, InFlightGate
from multiagent.models._runnable_model import RunnableChatModel
from multiagent.models.accounting import (
    DEFAULT_MAX_OUTPUT_TOKENS,
    ESTIMATED_OUTPUT_TOKENS,
    CallIdentity,
)
from multiagent.models.adaptive import shared_controller
from multiagent.models.analysis_cache import AnalysisCache, open_analysis_cache
from multiagent.models.backpressure import BackpressureConfig, BackpressureController
from multiagent.models.budget import ProjectBudget, open_project_budget
from multiagent.models.completion_cache import CompletionCache, open_completion_cache
from multiagent.models.factory import (
    ChosenModel,
    build_chat_model,
    check_provider,
    choose_model,
    own_base_url,
    without_client_retries,
)
from multiagent.models.ledger import CallRecord, RunLedger
from multiagent.models.pipeline_model import PipelineChatModel
from multiagent.models.retry import RetryPolicy
from multiagent.policies import TIERS, ModelPrice, Settings, Tier

if TYPE_CHECKING:
    import httpx2

_ModelKey = tuple[str, str, str]

#: The first version's name for the per-agent model; kept for callers that used it.
AgentModel = PipelineChatModel


class ModelPipeline:
    """Hands out per-agent models; shared state (limiters, caches) is per process.

    Args:
        settings: Resolved settings (profile, provider, data directory).
        retry: Retry policy; default: the profile's ``retry_attempts``.
        backpressure: Controller bounds; default: the profile's ``rate_limit`` section.
        model: The chat model every agent calls instead of the profile's tiers: any LangChain
            ``BaseChatModel`` or an ``init_chat_model`` string (``openai:gpt-4o-mini``,
            ``ollama:llama3``); it goes through the same cache, limiter, retries, accounting
            and redaction (see :func:`multiagent.models.factory.choose_model`).
        price: What ``model`` costs, when the profile's price table does not list it
            (``ModelPrice(input_per_mtok=0, output_per_mtok=0)`` for a free local model); a
            ``.with_fallbacks()`` model's fallbacks are priced from the table.
        model_source: Where ``model`` came from, for error messages (``--model``).
        max_in_flight: Calls of this pipeline at the provider at once, at most, over every
            model it hands out (a queue worker's ``--concurrency``, kept while more threads
            prepare calls): held around the HTTP exchange for the ``openai`` provider, else
            taken before the controller's slot (see :mod:`multiagent.models._in_flight`).
            Default: no bound of its own.
        calls: The ``(node, tier)`` calls the pipeline will make, when the command knows
            them: budgets (the profile's daily one here, a run's in :meth:`check_budget`) are
            checked against these; default: the smallest call at every tier.

    Raises:
        ConfigError: A model has no price, or ``model`` cannot be resolved.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        retry: RetryPolicy | None = None,
        backpressure: BackpressureConfig | None = None,
        model: BaseChatModel | Runnable[Any, Any] | str | None = None,
        price: ModelPrice | None = None,
        model_source: str = "model",
        max_in_flight: int | None = None,
        calls: Iterable[tuple[str, Tier]] | None = None,
    ) -> None:
        self.chosen: ChosenModel | None = (
            None if model is None else choose_model(model, source=model_source)
        )
        loaded_for = settings.provider
        if self.chosen is not None and self.chosen.model is None:
            # one of our own providers, named in the model string: it replaces the setting
            settings = settings.model_copy(update={"provider": self.chosen.provider})
        if settings.provider == "local":
            from multiagent.policies.local import local_settings

            tiers = settings.profile.models
            names = [*map(tiers.for_tier, TIERS), *([self.chosen.name] if self.chosen else [])]
            settings = local_settings(settings, names=names, with_layer=loaded_for != "local")
        self.price = price
        self.settings = settings
        self.calls = None if calls is None else tuple(calls)
        self.in_flight = None if max_in_flight is None else InFlightGate(max_in_flight)
        self._http_clients: tuple[httpx2.Client, httpx2.AsyncClient] | None = None
        profile = settings.profile
        self.retry = retry or RetryPolicy(attempts=profile.rate_limit.retry_attempts)
        self.backpressure = backpressure or BackpressureConfig.from_profile(profile.rate_limit)
        # one model is wired per (tier, agent, model) for the pipeline's life; a run gets a
        # shallow copy that records into its ledger (a few µs, where wiring a model — the
        # provider model, its copy with response headers, pydantic validation — costs ~100 µs
        # and used to be paid by every run for every agent)
        self._wired: dict[_ModelKey, PipelineChatModel] = {}
        self.check_prices()
        self.check_controllers()
        if self.chosen is None or self.chosen.model is None:
            check_provider(settings)  # before a run stores anything, not at its first call
        daily = profile.budget.daily_usd
        # SQLite under MULTIAGENT_HOME, or Redis (every machine) when MULTIAGENT_REDIS_URL is set
        self.project: ProjectBudget | None = open_project_budget(settings)
        if daily is not None:
            self.check_budget(daily, source=settings.origin_of("budget.daily_usd"))

    @property
    def provider(self) -> str:
        """The provider every call is recorded and limited under."""
        return self.chosen.provider if self.chosen is not None else self.settings.provider

    def model_name(self, tier: Tier) -> str:
        """The model an agent of ``tier`` calls: the brought model, else the profile's."""
        if self.chosen is not None:
            return self.chosen.name
        return self.settings.profile.models.for_tier(tier)

    def price_of(self, name: str) -> ModelPrice:
        """The price of model ``name``: the one given for the brought model, else the table's.

        Raises:
            ConfigError: No price is known; the message says how to give one.
        """
        brought = self.chosen is not None and name == self.chosen.name
        if brought and self.price is not None:
            return self.price
        try:
            return self.settings.profile.require_price(name)
        except ConfigError as exc:
            if not brought:
                raise
            raise ConfigError(
                f"{exc}; or pass price=ModelPrice(input_per_mtok=..., output_per_mtok=...) "
                "with the model (build_context / ModelPipeline)"
            ) from None

    def check_prices(self, *models: str) -> None:
        """Raise ``ConfigError`` for a configured model (or one of ``models``, or a fallback of
        the brought model) with no price."""
        for name in (*(self.model_name(t) for t in TIERS), *models):
            self.price_of(name)
        for name in self.chosen.fallbacks if self.chosen is not None else ():
            try:
                self.price_of(name)
            except ConfigError as exc:  # its answers are recorded at its own price
                raise ConfigError(f"fallback {exc}") from None

    def _held_price(self, name: str) -> ModelPrice:
        """The price a call of ``name`` is held at: the dearest of the brought model's own
        and its fallbacks' (any of them may answer), else ``name``'s."""
        chosen = self.chosen
        if chosen is None or name != chosen.name or not chosen.fallbacks:
            return self.price_of(name)
        return dearest(map(self.price_of, (name, *chosen.fallbacks)))

    def check_controllers(self) -> None:
        """Raise ``ConfigError`` when this process limits a configured model already under
        other ``rate_limit`` settings (see :func:`~multiagent.models._controllers.
        check_shared_controller`); checked in this process only, Redis checks its own."""
        if self.settings.redis_url:
            return
        for name in {self.model_name(t) for t in TIERS}:
            check_shared_controller(
                provider=self.provider, model=name, base_url=self.base_url_of(name),
                config=self.backpressure,
            )  # fmt: skip

    def check_budget(
        self,
        budget_usd: float,
        *,
        source: str,
        calls: Iterable[tuple[str, Tier]] | None = None,
    ) -> None:
        """Refuse a budget that can never admit one of the calls a command makes.

        A call reserves its node's whole output allowance (``[models] max_output_tokens``) at
        its model's price before it is sent, so a budget below that never lets it through.

        Args:
            budget_usd: The budget.
            source: Where it came from (``--budget``, ``file … budget.daily_usd``).
            calls: The ``(node, tier)`` calls the command makes, each of which must fit;
                default: the pipeline's ``calls``, else (the command is not known) the
                smallest allowance at every tier.

        Raises:
            ConfigError: One line naming the budget, the node, its ``max_tokens`` (and where
                that came from), the model and what the call costs.
        """
        models = self.settings.profile.models
        if calls is None:
            calls = self.calls
        if calls is None:
            # the cheapest call: a listed node's bound, or the bound of every node not listed
            node = min([*models.max_output_tokens, "default"], key=models.output_limit)
            calls = [(node, tier) for tier in TIERS]
        worst: tuple[float, str, int, str] | None = None
        for node, tier in calls:
            allowance = models.output_limit(node)
            name = self.model_name(tier)
            cost = self._held_price(name).cost(0, allowance)
            if cost > budget_usd and (worst is None or cost > worst[0]):
                worst = (cost, node, allowance, name)
        if worst is None:
            return
        cost, node, allowance, name = worst
        raise ConfigError(
            f"budget ${budget_usd:g} (from {source}) cannot cover one call of node {node}: "
            f"max_tokens {allowance} (from {self._allowance_origin(node)}) at {name} costs "
            f"${cost:.6f}; raise the budget or lower max_tokens"
        )

    def _allowance_origin(self, node: str) -> str:
        """Where the output allowance of ``node``'s calls was set."""
        limits = self.settings.profile.models.max_output_tokens
        for key in (node, "default"):
            if key in limits:
                return self.settings.origin_of(f"models.max_output_tokens.{key}")
        return "the built-in default"

    @property
    def completion_cache(self) -> CompletionCache | None:
        """The shared completion cache, or ``None`` when the profile switches it off."""
        cache = self.settings.profile.cache
        if not cache.completion_enabled:
            return None
        return open_completion_cache(
            self.settings.home, ttl_s=cache.completion_ttl_s, redis_url=self.settings.redis_url
        )

    @property
    def analysis_cache(self) -> AnalysisCache:
        """The shared analysis cache (a pass-through when the profile switches it off)."""
        cache = self.settings.profile.cache
        return open_analysis_cache(
            self.settings.home,
            ttl_s=cache.analysis_ttl_s,
            enabled=cache.analysis_enabled,
            redis_url=self.settings.redis_url,
        )

    def controller_for(self, model: str) -> BackpressureController:
        """The process-wide backpressure controller for ``model`` at this provider."""
        return self._controller(self.provider, model, self.base_url_of(model))

    def _controller(
        self, provider: str, model: str, base_url: str | None
    ) -> BackpressureController:
        return shared_controller(
            provider=provider,
            model=model,
            base_url=base_url,
            config=self.backpressure,
            redis_url=self.settings.redis_url,
            fallback_fraction=self.settings.profile.rate_limit.redis_fallback_fraction,
        )

    def _http(self) -> tuple[httpx2.Client, httpx2.AsyncClient] | None:
        """The HTTP clients this pipeline's ``openai`` models send through: the SDK's own,
        cut by a second Ctrl-C (:mod:`multiagent.models._cut_on_stop`), holding the in-flight
        bound around each exchange when the pipeline has one."""
        if self.provider != "openai":
            return None
        if self._http_clients is None:
            if self.in_flight is None:
                from multiagent.models._cut_on_stop import cuttable_http_clients

                self._http_clients = cuttable_http_clients()
            else:
                from multiagent.models._gated_http import gated_http_clients

                self._http_clients = gated_http_clients(self.in_flight)
        return self._http_clients

    def _gated(
        self, controller: BackpressureController, provider_model: BaseChatModel
    ) -> BackpressureController:
        """``controller`` behind this pipeline's in-flight bound, unless the bound is held by
        ``provider_model``'s HTTP client already (or the pipeline has none)."""
        if self.in_flight is None or self._sends_through_gate(provider_model):
            return controller
        # the same API (slots, state, metrics), each slot first passing the gate
        return cast("BackpressureController", GatedController(controller, self.in_flight))

    def _fallback_controllers(
        self, provider_model: BaseChatModel
    ) -> tuple[BackpressureController, ...]:
        """A brought chain's fallbacks' controllers, in try order, each keyed by the
        fallback's own provider, server and name (the primary's are): a call goes to the
        first whose endpoint is open while the primary's is paused (see
        :mod:`multiagent.models._chain_call`); a fallback at the primary's endpoint shares
        its gate, so it is paused with it."""
        if not isinstance(provider_model, RunnableChatModel):
            return ()
        models = chat_models_in(provider_model.runnable)[1:]
        controllers = []
        for (provider, name), model in zip(provider_model.members[1:], models, strict=True):
            server = self._server(provider, cast("BaseChatModel", model))
            controller = self._controller(provider, name, server)
            controllers.append(self._gated(controller, provider_model))
        return tuple(controllers)

    def _sends_through_gate(self, provider_model: BaseChatModel) -> bool:
        clients = self._http_clients
        return clients is not None and getattr(provider_model, "http_client", None) is clients[0]

    def base_url_of(self, model: str) -> str | None:
        """The server ``model`` is sent to: a brought model's own base URL, else the
        ``openai`` provider's configured one (``None``: the provider's default)."""
        chosen = self.chosen
        brought = chosen.model if chosen is not None and model == chosen.name else None
        return self._server(self.provider, brought)

    def _server(self, provider: str, brought: BaseChatModel | None) -> str | None:
        """A brought model's own base URL, else ``provider``'s configured one (``openai``'s:
        ``None`` is its default, as for any other provider)."""
        own = None if brought is None else own_base_url(brought)
        if own is not None:
            return own
        return self.settings.openai_base_url if provider == "openai" else None

    def model_for(
        self,
        tier: Tier,
        *,
        agent: str,
        ledger: RunLedger | None = None,
        model: str | None = None,
    ) -> BaseChatModel:
        """Return the model ``agent`` calls for ``tier``, wired through the pipeline.

        Args:
            tier: ``"fast"``, ``"standard"`` or ``"premium"``.
            agent: Who calls (labels the ledger records and metrics).
            ledger: The run's ledger; its budget is enforced before each provider call.
            model: A model name that replaces the profile's choice for the tier.

        Raises:
            ConfigError: The provider cannot be built (e.g. ``openai`` without a key).
        """
        name = model or self.model_name(tier)
        key = (tier, agent, name)
        wired = self._wired.get(key)
        if wired is None:
            wired = self._wired[key] = self._build(tier, agent=agent, name=name)
        if ledger is None:
            return wired
        # the run's copies live on its ledger and go with it (a map beside it, keyed weakly by
        # the ledger, never let one go: each copy's identity holds the ledger)
        models = ledger.models
        found = models.get((self, key))
        if found is None:
            identity = dataclasses.replace(wired.identity, ledger=ledger)
            found = models[(self, key)] = wired.model_copy(update={"identity": identity})
        return found

    def _build(self, tier: Tier, *, agent: str, name: str) -> PipelineChatModel:
        """Wire a new pipeline model for ``agent`` calling ``name`` (recording in no ledger)."""
        settings = self.settings
        chosen = self.chosen
        if chosen is not None and chosen.model is not None and name == chosen.name:
            provider_model = without_client_retries(chosen.model)
            if isinstance(provider_model, RunnableChatModel):
                provider_model = provider_model.priced(self.price_of)
        else:
            provider_model = build_chat_model(
                tier, settings, model=name, http_clients=self._http(), gate=self.in_flight
            )
        identity = CallIdentity(
            agent=agent,
            provider=self.provider,
            model=name,
            price=self.price_of(name),
            ledger=None,
            project=self.project,
        )
        wired = PipelineChatModel(
            provider_model=_with_response_headers(provider_model),
            identity=identity,
            controller=self._gated(self.controller_for(name), provider_model),
            fallback_controllers=self._fallback_controllers(provider_model),
            retry=self.retry,
            base_url=self.base_url_of(name),
            redact=settings.profile.features.pii_redaction,
            completions=self.completion_cache,
            cache=False,  # looked up by the model itself (see pipeline_model)
        )
        # LangChain serialises a model for its run callbacks once per instance (a cached
        # property, ~40 µs); made here, every run's copy of the model inherits it
        getattr(wired, "_serialized", None)
        return wired


def _with_response_headers(model: BaseChatModel) -> BaseChatModel:
    """Ask an OpenAI model for its response headers: they carry the account's rate limits."""
    if "include_response_headers" in type(model).model_fields:
        return model.model_copy(update={"include_response_headers": True})
    return model


__all__ = [
    "DEFAULT_MAX_OUTPUT_TOKENS",
    "ESTIMATED_OUTPUT_TOKENS",
    "AgentModel",
    "CallRecord",
    "ModelPipeline",
    "PipelineChatModel",
    "RunLedger",
]
