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

A cache hit of an answer a fallback gave is recorded as that member, as the answer was: the
answer names its member (:data:`~multiagent.models._runnable_model.ANSWERED_BY`, kept with it
in the cache) and :func:`answered_by` finds its identity, so ``saved_usd`` is what the answer
first cost, at the rates of the member that gave it. The cost LangSmith reads off an answer
(``input_cost``, ``output_cost``) is priced as that member too.

**Pacing.** The chain is paced by the controller of its primary (controllers are keyed by
provider, base URL and model, and the pipeline keys a brought model's by the model tried first),
so that controller must hear what the primary's requests meet, as for a plain model. LangChain
absorbs the primary's failure when a fallback answers: the controller heard of an answer, the
primary's 429s never cut its pace nor paused it for their ``Retry-After``, and the primary was
sent every call at full rate while the backup answered them all. The call's
:class:`~multiagent.models._runnable_model.ChainWatch` now reports the primary's failure
through the attempt's passage (:func:`paced`) the moment LangChain tells of it: a 429 cuts the
pace and pauses the provider's gate for its ``Retry-After``, a server error counts against the
primary's health, exactly as a plain model's would. The fallback's answer is then not told to
that controller (its latency and rate-limit headers are another model's), and the slot is free
while the fallback answers, since the primary is no longer busy with the request.

The chain's next calls wait for the primary's ``Retry-After``; they are not sent to the backup
directly meanwhile. The project's rule for a plain model is that nothing leaves for the
provider before an announced pause ends, whichever agent or model sends it (one gate per
provider endpoint), and a chain's every call starts with its primary, through the primary's
controller. Sending them to the backup instead would need a controller of the backup's own
(it has none: its requests would go unpaced, moving the storm from the primary onto it) and,
for a backup at the same endpoint, would break the pause anyway. The call that met the 429
still gets the backup's answer at once (what the chain was built for): its request to the
backup is the one sent during the pause, where a plain model's call would have waited.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage
from langchain_core.outputs import Generation

from multiagent.models._bp_wait import Passage
from multiagent.models._runnable_model import (
    ANSWERED_BY,
    WATCH_ARG,
    ChainWatch,
    RunnableChatModel,
)
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


def _members(provider_model: BaseChatModel, identity: CallIdentity) -> list[CallIdentity] | None:
    """Each member's identity, for a priced wrapper of more than one chat model; else ``None``."""
    if not isinstance(provider_model, RunnableChatModel) or len(provider_model.prices) < 2:
        return None
    return [
        dataclasses.replace(identity, provider=provider, model=name, price=price)
        for (provider, name), price in zip(
            provider_model.members, provider_model.prices, strict=True
        )
    ]


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
    members = _members(provider_model, identity)
    if members is not None:
        return ChainCall(members, messages, kwargs, default_max_output=default_max_output)
    return CallInFlight(identity, messages, kwargs, default_max_output=default_max_output)


def paced(call: CallInFlight, passage: Passage) -> None:
    """``passage`` is the way of ``call``'s attempt through its controller: a chain's watch
    reports its primary's failure through it (a plain call reports its own outcome)."""
    if isinstance(call, ChainCall):
        call.watch.passage = passage


def answered_by(
    provider_model: BaseChatModel, identity: CallIdentity, generations: Sequence[Generation]
) -> CallIdentity:
    """Who gave an answer (fresh or cached): the member of a chain it names, else ``identity``."""
    members = _members(provider_model, identity)
    if members is None or not generations:
        return identity
    name = (generations[0].generation_info or {}).get(ANSWERED_BY)
    return next((member for member in members if member.model == name), identity)
