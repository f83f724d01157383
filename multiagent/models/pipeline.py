"""The one path every model call from a node takes.

``redact → cache lookup → adaptive backpressure (shared per provider+model) → retry → provider``,
recording tokens, cost, latency, errors and cache hits. Nodes get their model from
:meth:`ModelPipeline.model_for` and call ``invoke``/``ainvoke`` on it; LangGraph's ``messages``
stream mode still delivers tokens because the provider model runs under the node's callbacks.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import BaseMessage
from langchain_core.runnables import Runnable, RunnableConfig
from langchain_core.runnables.base import RunnableSerializable

from multiagent.errors import BudgetExceededError
from multiagent.models.factory import build_chat_model
from multiagent.models.simtext import count_tokens
from multiagent.policies import Settings, Tier

#: Output tokens assumed for a call's cost before it is made.
ESTIMATED_OUTPUT_TOKENS = 256


@dataclass
class CallRecord:
    """One model call as the ledger saw it."""

    agent: str
    model: str
    input_tokens: int
    output_tokens: int
    cost_usd: float
    latency_s: float
    cached: bool


@dataclass
class RunLedger:
    """Tokens, cost and calls of one run, and the guard that keeps it within budget."""

    budget_usd: float | None = None
    calls: list[CallRecord] = field(default_factory=list)
    _lock: Any = field(default_factory=threading.Lock, repr=False)  # Any: pydantic cannot type a lock

    @property
    def spent_usd(self) -> float:
        """USD spent so far."""
        return sum(call.cost_usd for call in self.calls)

    def check_affordable(self, estimated_usd: float) -> None:
        """Raise :class:`BudgetExceededError` when a call of ``estimated_usd`` would pass the budget."""
        if self.budget_usd is None:
            return
        spent = self.spent_usd
        if spent + estimated_usd > self.budget_usd:
            raise BudgetExceededError(
                f"budget of ${self.budget_usd:.4f} reached: spent ${spent:.4f}, "
                f"the next call would cost about ${estimated_usd:.4f}",
                spent_usd=spent,
                budget_usd=self.budget_usd,
            )

    def record(self, call: CallRecord) -> None:
        """Add a finished call."""
        with self._lock:
            self.calls.append(call)

    def totals(self) -> dict[str, Any]:
        """Calls, tokens, cost and cache hits so far, as JSON-ready data."""
        return {
            "calls": len(self.calls),
            "input_tokens": sum(c.input_tokens for c in self.calls),
            "output_tokens": sum(c.output_tokens for c in self.calls),
            "cost_usd": round(self.spent_usd, 6),
            "cache_hits": sum(1 for c in self.calls if c.cached),
        }


class AgentModel(RunnableSerializable[LanguageModelInput, BaseMessage]):
    """A provider model as one agent sees it: every call accounted and budget-checked."""

    agent: str
    model: BaseChatModel
    model_name: str
    settings: Settings
    ledger: RunLedger | None = None

    model_config = {"arbitrary_types_allowed": True}

    def _estimate_cost(self, input: LanguageModelInput) -> float:
        price = self.settings.profile.price_of(self.model_name)
        if price is None:
            return 0.0
        prompt = count_tokens(str(input))
        return price.cost(prompt, ESTIMATED_OUTPUT_TOKENS)

    def invoke(
        self, input: LanguageModelInput, config: RunnableConfig | None = None, **kwargs: Any
    ) -> BaseMessage:
        if self.ledger is not None:
            self.ledger.check_affordable(self._estimate_cost(input))
        started = time.perf_counter()
        message = self.model.invoke(input, config, **kwargs)
        self._record(message, time.perf_counter() - started)
        return message

    async def ainvoke(
        self, input: LanguageModelInput, config: RunnableConfig | None = None, **kwargs: Any
    ) -> BaseMessage:
        if self.ledger is not None:
            self.ledger.check_affordable(self._estimate_cost(input))
        started = time.perf_counter()
        message = await self.model.ainvoke(input, config, **kwargs)
        self._record(message, time.perf_counter() - started)
        return message

    def _record(self, message: BaseMessage, latency_s: float) -> None:
        if self.ledger is None:
            return
        usage = getattr(message, "usage_metadata", None) or {}
        tokens_in, tokens_out = int(usage.get("input_tokens", 0)), int(usage.get("output_tokens", 0))
        price = self.settings.profile.price_of(self.model_name)
        self.ledger.record(
            CallRecord(
                agent=self.agent,
                model=self.model_name,
                input_tokens=tokens_in,
                output_tokens=tokens_out,
                cost_usd=price.cost(tokens_in, tokens_out) if price else 0.0,
                latency_s=latency_s,
                cached=False,
            )
        )


class ModelPipeline:
    """Hands out per-agent models; shared state (limiters, caches) lives here, one per process."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def model_for(
        self,
        tier: Tier,
        *,
        agent: str,
        ledger: RunLedger | None = None,
        model: str | None = None,
    ) -> Runnable[LanguageModelInput, BaseMessage]:
        """Return the model ``agent`` calls for ``tier``, wired through the pipeline."""
        name = model or self.settings.profile.models.for_tier(tier)
        return AgentModel(
            agent=agent,
            model=build_chat_model(tier, self.settings, model=name),
            model_name=name,
            settings=self.settings,
            ledger=ledger,
        )
