"""One call of a brought model with fallbacks: held at its dearest member's price, recorded
under the member that answered.

``primary.with_fallbacks([backup])`` answers from ``backup`` when ``primary`` fails: a
different model at a different price. The call's one record (ledger, budgets, metrics, ``--json``,
trace attributes) names and prices the member that answered, or, when every member failed, the
one whose error LangChain raised (the primary's). Each member that failed before the answer (or
besides the raised error) gets a failed call of its own with the tokens it reported, if any, so
a primary that keeps failing shows in the metrics instead of hiding behind its backup. Only the
last attempt of the pipeline's retry loop is told of, as for any model: its failed attempts are
counted as retries.

Before the call is sent its worst case is held at the dearest member's prices (the highest
input and output rate of any member), since any of them may answer.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage

from multiagent.models._runnable_model import WATCH_ARG, ChainWatch, RunnableChatModel
from multiagent.models.accounting import CallIdentity
from multiagent.models.budget_hold import CallInFlight
from multiagent.models.ledger import CallRecord, Outcome
from multiagent.policies import ModelPrice


def dearest(prices: Iterable[ModelPrice]) -> ModelPrice:
    """A price no member's call can cost more than: the highest rate of each kind."""
    listed = list(prices)
    return ModelPrice(
        input_per_mtok=max(p.input_per_mtok for p in listed),
        output_per_mtok=max(p.output_per_mtok for p in listed),
    )


class ChainCall(CallInFlight):
    """A :class:`CallInFlight` of a model with fallbacks (``members`` in try order, the
    primary's identity first)."""

    def __init__(
        self,
        members: Sequence[CallIdentity],
        messages: Sequence[BaseMessage],
        kwargs: dict[str, Any],
        *,
        default_max_output: int | None,
    ) -> None:
        self.members = members
        held_as = dataclasses.replace(members[0], price=dearest(m.price for m in members))
        super().__init__(held_as, messages, kwargs, default_max_output=default_max_output)
        self.watch = ChainWatch()
        kwargs[WATCH_ARG] = self.watch  # taken out by the wrapper (see _runnable_model)

    def _finish(self, outcome: Outcome, error: BaseException | None) -> CallRecord:
        watch = self.watch
        owner = next((f.index for f in watch.failures if f.error is error), None)
        if owner is None:
            owner = watch.last if watch.last is not None else 0
        for failure in watch.failures:
            if failure.index == owner or not isinstance(failure.error, Exception):
                continue  # a stream closed by the caller is no failure of its model
            used = failure.usage or (0, 0)
            self.members[failure.index].finish(
                "error",
                input_tokens=used[0],
                output_tokens=used[1],
                estimated=False,
                latency_s=failure.latency_s,
                attempts=1,
                error=failure.error,
            )
        self.identity = self.members[owner]
        return super()._finish(outcome, error)


def call_in_flight(
    provider_model: BaseChatModel,
    identity: CallIdentity,
    messages: Sequence[BaseMessage],
    kwargs: dict[str, Any],
    *,
    default_max_output: int | None,
) -> CallInFlight:
    """The call in flight for ``provider_model``: a :class:`ChainCall` for a priced wrapper of
    more than one chat model, else a plain one under ``identity``."""
    if isinstance(provider_model, RunnableChatModel) and len(provider_model.prices) > 1:
        members = [
            dataclasses.replace(identity, provider=provider, model=name, price=price)
            for (provider, name), price in zip(
                provider_model.members, provider_model.prices, strict=True
            )
        ]
        return ChainCall(members, messages, kwargs, default_max_output=default_max_output)
    return CallInFlight(identity, messages, kwargs, default_max_output=default_max_output)
