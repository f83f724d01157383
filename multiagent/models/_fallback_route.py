"""Where one attempt of a pipeline call is sent: a brought chain skips its primary while the
primary's endpoint is paused.

A ``Retry-After`` pauses a controller's endpoint: nothing is sent there before the pause ends.
A plain model's attempt waits it out at its gate; a brought model with fallbacks (see
:mod:`multiagent.models._chain_call`) has members whose endpoints may be open, so its attempt is
sent to the chain from its first fallback whose endpoint is open, paced by that fallback's
controller. :func:`route_for` is asked once per attempt (the pause may end or begin between two),
and the trimmed chain it sends to is built once per model.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple, cast

from langchain_core.language_models import BaseChatModel

from multiagent.models._runnable_model import RunnableChatModel
from multiagent.models.backpressure import BackpressureController

if TYPE_CHECKING:
    from multiagent.models._pipeline_calls import PipelineCalls


class Route(NamedTuple):
    """Where an attempt is sent: the number of the chain member tried first (0: the primary,
    or a model without fallbacks), the model called and the controller pacing it."""

    member: int
    model: BaseChatModel
    controller: BackpressureController


def route_for(model: PipelineCalls) -> Route:
    """Where an attempt goes: to the provider model through its controller, unless a
    ``Retry-After`` pauses that controller's endpoint and the model is a brought chain:
    then to the chain from its first fallback whose endpoint is open, through that
    fallback's controller (see multiagent.models._chain_call). With every member paused
    the attempt waits at the primary's gate, as a plain model's would."""
    controller = model.controller
    if not model.fallback_controllers or controller.paused_for() <= 0:
        return Route(0, model.provider_model, controller)
    for member, other in enumerate(model.fallback_controllers, 1):
        if other.paused_for() <= 0:
            return Route(member, _from_member(model, member), other)
    return Route(0, model.provider_model, controller)


def _from_member(model: PipelineCalls, member: int) -> BaseChatModel:
    """The brought chain trying its members from ``member`` on (built once per model)."""
    key = f"from_member_{member}"
    found = model._derived.get(key)
    if found is None:
        chain = cast("RunnableChatModel", model.provider_model)
        found = model._derived[key] = chain.from_member(member)
    return found  # type: ignore[no-any-return]
