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
answer names its member (:data:`~multiagent.models._chain_watch.ANSWERED_BY`, kept with it
in the cache) and :func:`answered_by` finds its identity, so ``saved_usd`` is what the answer
first cost, at the rates of the member that gave it. The cost LangSmith reads off an answer
(``input_cost``, ``output_cost``) is priced as that member too.

**Pacing.** Each member is paced by a controller of its own, keyed as any model's is (its
provider, base URL and name; the pipeline keys the primary's by the model tried first). A
call is sent to the primary through the primary's controller, so that controller hears what
the primary's requests meet, as for a plain model: LangChain absorbs the primary's failure
when a fallback answers, so the call's :class:`~multiagent.models._chain_watch.ChainWatch`
reports it through the attempt's passage (:func:`paced`) the moment LangChain tells of it: a
429 cuts the pace and pauses the primary's gate for its ``Retry-After``, a server error counts
against the primary's health. The fallback's answer is not told to that controller (its
latency and rate-limit headers are another model's), and the slot is free while the fallback
answers, since the primary is no longer busy with the request.

While the primary's gate is paused, the chain's calls skip it: each goes straight to the first
fallback whose own gate is open (the next one, in order, if that one's is paused too), as the
chain trimmed of the members before it, through that fallback's controller, which then hears
its outcome as the primary's heard the primary's. Nothing is sent to the paused primary, so
the rule that nothing leaves for an endpoint before its announced pause ends still holds, and
no agent waits out a ``Retry-After`` the backup could answer during: routing around a rate
limited primary is what fallbacks are brought for. The backup is not sent the storm unpaced
either, its controller paces it and a 429 of its own pauses it too. A fallback at the
primary's endpoint shares its gate (one per provider and base URL) and is skipped with it.
The call is recorded as the member that answered; a skipped primary never started, so no
failed call of it is recorded. Once the pause ends, calls start with the primary again. With
every member's gate paused, the call waits at the primary's gate, as a plain model's would.
The budget is held at the dearest member's price whichever member is tried first.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage
from langchain_core.outputs import Generation

from multiagent.models._bp_wait import Passage
from multiagent.models._chain_watch import ANSWERED_BY, WATCH_ARG, ChainWatch
from multiagent.models._runnable_model import RunnableChatModel
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


def paced(call: CallInFlight, passage: Passage, *, first: int = 0) -> None:
    """``passage`` is the way of ``call``'s attempt through the controller of member
    ``first``, the one the attempt is sent to: a chain's watch reports that member's failure
    through it (a plain call reports its own outcome)."""
    if isinstance(call, ChainCall):
        call.watch.passage = passage
        call.watch.first = first


def answered_by(
    provider_model: BaseChatModel, identity: CallIdentity, generations: Sequence[Generation]
) -> CallIdentity:
    """Who gave an answer (fresh or cached): the member of a chain it names, else ``identity``."""
    members = _members(provider_model, identity)
    if members is None or not generations:
        return identity
    name = (generations[0].generation_info or {}).get(ANSWERED_BY)
    return next((member for member in members if member.model == name), identity)
