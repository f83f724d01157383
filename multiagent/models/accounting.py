"""Accounting of model calls: estimates before a call, records after it (ledger and metrics)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from langchain_core.caches import RETURN_VAL_TYPE, BaseCache
from langchain_core.messages import BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult

from multiagent.models.ledger import CallRecord, RunLedger
from multiagent.models.provider_errors import error_kind
from multiagent.models.tokens import prompt_tokens
from multiagent.observability.metrics import get_metrics
from multiagent.policies import ModelPrice

#: Output tokens assumed for a call's cost before it is made, when it sets no ``max_tokens``.
ESTIMATED_OUTPUT_TOKENS = 256


@dataclass(frozen=True)
class CallIdentity:
    """Who calls which model, where the call is recorded, and what it costs."""

    agent: str
    provider: str
    model: str
    price: ModelPrice | None
    ledger: RunLedger | None

    def estimate_usd(self, messages: Sequence[BaseMessage], *, max_output: int | None) -> float:
        """The cost of a call if it used its whole output allowance."""
        if self.price is None:
            return 0.0
        output = max_output if max_output is not None else ESTIMATED_OUTPUT_TOKENS
        return self.price.cost(prompt_tokens(messages), output)

    def check_budget(self, messages: Sequence[BaseMessage], *, max_output: int | None) -> None:
        """Raise ``BudgetExceededError`` before a call that would pass the ledger's budget."""
        if self.ledger is not None:
            self.ledger.check_affordable(self.estimate_usd(messages, max_output=max_output))

    def _labels(self, outcome: str) -> dict[str, str]:
        return {
            "provider": self.provider,
            "model": self.model,
            "agent": self.agent,
            "outcome": outcome,
        }

    def record_answer(
        self, *, input_tokens: int, output_tokens: int, latency_s: float, attempts: int
    ) -> None:
        """Record an answered call."""
        cost = self.price.cost(input_tokens, output_tokens) if self.price else 0.0
        metrics = get_metrics()
        metrics.inc("model_calls_total", labels=self._labels("ok"))
        for direction, n in (("input", input_tokens), ("output", output_tokens)):
            metrics.inc(
                "model_tokens_total", value=n, labels={"model": self.model, "direction": direction}
            )
        metrics.inc("model_cost_usd_total", value=cost, labels={"model": self.model})
        metrics.inc("model_latency_seconds_sum", value=latency_s, labels={"model": self.model})
        metrics.inc("model_latency_seconds_count", labels={"model": self.model})
        self._to_ledger(input_tokens, output_tokens, cost, latency_s, attempts, None, False)

    def record_failure(self, exc: BaseException, *, latency_s: float, attempts: int) -> None:
        """Record a call that failed after its last attempt."""
        kind = error_kind(exc)
        metrics = get_metrics()
        metrics.inc("model_calls_total", labels=self._labels("error"))
        metrics.inc("model_errors_total", labels={"model": self.model, "kind": kind})
        self._to_ledger(0, 0, 0.0, latency_s, attempts, kind, False)

    def record_hit(self, *, latency_s: float) -> None:
        """Record a call served from the completion cache: nothing sent, nothing spent."""
        get_metrics().inc("model_calls_total", labels=self._labels("cached"))
        self._to_ledger(0, 0, 0.0, latency_s, 0, None, True)

    def _to_ledger(
        self,
        tokens_in: int,
        tokens_out: int,
        cost: float,
        latency_s: float,
        attempts: int,
        error: str | None,
        cached: bool,
    ) -> None:
        if self.ledger is None:
            return
        self.ledger.record(
            CallRecord(
                agent=self.agent,
                model=self.model,
                input_tokens=tokens_in,
                output_tokens=tokens_out,
                cost_usd=cost,
                latency_s=latency_s,
                cached=cached,
                provider=self.provider,
                attempts=attempts,
                error=error,
            )
        )


def usage_of(messages: Iterable[BaseMessage]) -> tuple[int, int]:
    """Input and output tokens summed over the usage metadata of ``messages`` (or chunks)."""
    tokens_in = tokens_out = 0
    for message in messages:
        usage: Mapping[str, Any] = getattr(message, "usage_metadata", None) or {}
        tokens_in += int(usage.get("input_tokens", 0))
        tokens_out += int(usage.get("output_tokens", 0))
    return tokens_in, tokens_out


def pop_headers(generation: ChatGeneration | ChatGenerationChunk) -> Mapping[str, str] | None:
    """Take provider response headers out of a generation, so they are read, not stored."""
    found: Any = None
    if generation.generation_info and "headers" in generation.generation_info:
        found = generation.generation_info.pop("headers")
    metadata = generation.message.response_metadata
    if "headers" in metadata:
        found = metadata.pop("headers") or found
    return found if isinstance(found, Mapping) else None


def result_headers(result: ChatResult) -> Mapping[str, str] | None:
    """The response headers of a result (removed from it)."""
    headers = None
    for generation in result.generations:
        headers = pop_headers(generation) or headers
    if result.llm_output and "headers" in result.llm_output:
        headers = result.llm_output.pop("headers") or headers
    return headers


class LedgerCacheView(BaseCache):
    """One agent's view of the shared completion cache: hits are recorded as its calls."""

    def __init__(self, store: BaseCache, *, identity: CallIdentity, clock: Any) -> None:
        self.store = store
        self.identity = identity
        self._clock = clock

    def lookup(self, prompt: str, llm_string: str) -> RETURN_VAL_TYPE | None:
        """Look up the shared store; a hit is recorded with ``cached=True`` and zero cost."""
        started = self._clock()
        found = self.store.lookup(prompt, llm_string)
        if found is not None:
            self.identity.record_hit(latency_s=self._clock() - started)
        return found

    def update(self, prompt: str, llm_string: str, return_val: RETURN_VAL_TYPE) -> None:
        """Store in the shared store."""
        self.store.update(prompt, llm_string, return_val)

    async def alookup(self, prompt: str, llm_string: str) -> RETURN_VAL_TYPE | None:
        """As :meth:`lookup`."""
        started = self._clock()
        found = await self.store.alookup(prompt, llm_string)
        if found is not None:
            self.identity.record_hit(latency_s=self._clock() - started)
        return found

    async def aupdate(self, prompt: str, llm_string: str, return_val: RETURN_VAL_TYPE) -> None:
        """As :meth:`update`."""
        await self.store.aupdate(prompt, llm_string, return_val)

    def clear(self, **kwargs: Any) -> None:
        """Clear the shared store."""
        self.store.clear(**kwargs)
