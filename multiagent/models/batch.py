"""Batch calls: many prompts through the pipeline at bounded concurrency, results in input order.

``create_batch_completions`` (threads) and ``acreate_batch_completions`` (asyncio) take a list of
prompts or of message lists. An exception in one item becomes that item's result and does not
sink the batch; a :class:`BatchSummary` says how many succeeded, failed and came from the cache,
the tokens and cost, and the wall time. Every call through the pipeline (a model name, or a
model the pipeline handed out) passes the same shared backpressure controller as the rest of the
process, so a batch cannot overrun the provider either. A plain chat model given instead is
called as it is: no limiter, cache or accounting (its summary counts its answers' usage, at no
price); give ``ModelPipeline(settings, model=it, price=...).model_for(...)`` to have those.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import BaseMessage

from multiagent.errors import UsageError
from multiagent.models.accounting import usage_of
from multiagent.models.ledger import RunLedger
from multiagent.models.pipeline import ModelPipeline
from multiagent.models.pipeline_model import PipelineChatModel
from multiagent.policies import Settings, Tier, load_settings

BatchRequest = str | Sequence[Any]
BatchItem = BaseMessage | Exception


@dataclass(frozen=True)
class BatchSummary:
    """What a batch did."""

    requests: int
    succeeded: int
    failed: int
    from_cache: int
    input_tokens: int
    output_tokens: int
    cost_usd: float
    wall_s: float
    max_concurrency: int

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready summary."""
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class BatchResult:
    """Per-request results in input order (a message, or the exception it failed with)."""

    results: list[BatchItem]
    summary: BatchSummary

    def __iter__(self) -> Iterator[BatchItem]:
        return iter(self.results)

    def __len__(self) -> int:
        return len(self.results)

    def __getitem__(self, index: int) -> BatchItem:
        return self.results[index]


def _checked(requests: Sequence[BatchRequest]) -> list[LanguageModelInput]:
    if isinstance(requests, str):
        raise UsageError("requests must be a list of prompts or message lists, not one string")
    checked: list[LanguageModelInput] = []
    for index, request in enumerate(requests):
        if isinstance(request, str) and request.strip():
            checked.append(request)
        elif isinstance(request, Sequence) and not isinstance(request, str) and request:
            checked.append(list(request))
        else:
            raise UsageError(
                f"request {index} is {request!r}; give a non-empty prompt or list of messages"
            )
    return checked


def _concurrency(value: int | None, settings: Settings) -> int:
    if value is None:
        if not settings.profile.features.batch_processing:
            return 1
        return settings.profile.rate_limit.max_concurrency
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 64:
        raise UsageError(f"max_concurrency={value!r} is not a whole number from 1 to 64")
    return value


def _batch_model(
    model: str | BaseChatModel | None,
    *,
    settings: Settings,
    tier: Tier,
    agent: str,
    ledger: RunLedger,
) -> BaseChatModel:
    if model is None or isinstance(model, str):
        pipeline = ModelPipeline(settings)
        return pipeline.model_for(tier, agent=agent, ledger=ledger, model=model)
    if isinstance(model, PipelineChatModel):
        identity = dataclasses.replace(model.identity, ledger=ledger)
        return model.model_copy(update={"identity": identity})
    return model


def _summary(
    results: list[BatchItem], ledger: RunLedger, *, wall_s: float, concurrency: int, tracked: bool
) -> BatchSummary:
    answered = [r for r in results if isinstance(r, BaseMessage)]
    if tracked:
        totals = ledger.totals()
        tokens_in, tokens_out = totals["input_tokens"], totals["output_tokens"]
        cost, cached = totals["cost_usd"], totals["cache_hits"]
    else:
        tokens_in, tokens_out = usage_of(answered) or (0, 0)
        cost, cached = 0.0, 0
    return BatchSummary(
        requests=len(results),
        succeeded=len(answered),
        failed=len(results) - len(answered),
        from_cache=cached,
        input_tokens=tokens_in,
        output_tokens=tokens_out,
        cost_usd=cost,
        wall_s=wall_s,
        max_concurrency=concurrency,
    )


def create_batch_completions(
    requests: Sequence[BatchRequest],
    *,
    max_concurrency: int | None = None,
    settings: Settings | None = None,
    tier: Tier = "standard",
    model: str | BaseChatModel | None = None,
    agent: str = "batch",
    **invoke_kwargs: Any,
) -> BatchResult:
    """Complete every request, at most ``max_concurrency`` at a time, in worker threads.

    Args:
        requests: Prompts (strings) or message lists (messages, ``(role, text)`` pairs, dicts).
        max_concurrency: Calls in flight at once; default the profile's ``max_concurrency``
            (1 when the profile turns batch processing off).
        settings: Resolved settings; default :func:`multiagent.load_settings`.
        tier: Which tier's model to use when ``model`` is not a model object.
        model: A model name for the tier, or a chat model to call instead of the pipeline's.
        agent: Name the calls are recorded under.
        **invoke_kwargs: Passed to every ``invoke`` (e.g. ``max_tokens``).

    Returns:
        Results in input order (a message, or the exception that item failed with) and a
        summary.

    Raises:
        UsageError: A request is empty or not a prompt/message list; a bad ``max_concurrency``.
    """
    settings = settings or load_settings()
    inputs = _checked(requests)
    concurrency = _concurrency(max_concurrency, settings)
    ledger = RunLedger()
    chat = _batch_model(model, settings=settings, tier=tier, agent=agent, ledger=ledger)

    def one(value: LanguageModelInput) -> BatchItem:
        try:
            return chat.invoke(value, **invoke_kwargs)
        except Exception as exc:
            return exc

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="batch") as pool:
        results = list(pool.map(one, inputs))
    tracked = isinstance(chat, PipelineChatModel)
    wall = time.perf_counter() - started
    return BatchResult(
        results, _summary(results, ledger, wall_s=wall, concurrency=concurrency, tracked=tracked)
    )


async def acreate_batch_completions(
    requests: Sequence[BatchRequest],
    *,
    max_concurrency: int | None = None,
    settings: Settings | None = None,
    tier: Tier = "standard",
    model: str | BaseChatModel | None = None,
    agent: str = "batch",
    **invoke_kwargs: Any,
) -> BatchResult:
    """Async twin of :func:`create_batch_completions` (tasks bounded by a semaphore)."""
    settings = settings or load_settings()
    inputs = _checked(requests)
    concurrency = _concurrency(max_concurrency, settings)
    ledger = RunLedger()
    chat = _batch_model(model, settings=settings, tier=tier, agent=agent, ledger=ledger)
    gate = asyncio.Semaphore(concurrency)

    async def one(value: LanguageModelInput) -> BatchItem:
        async with gate:
            try:
                return await chat.ainvoke(value, **invoke_kwargs)
            except Exception as exc:
                return exc

    started = time.perf_counter()
    results = list(await asyncio.gather(*(one(value) for value in inputs)))
    tracked = isinstance(chat, PipelineChatModel)
    wall = time.perf_counter() - started
    return BatchResult(
        results, _summary(results, ledger, wall_s=wall, concurrency=concurrency, tracked=tracked)
    )
