"""The chat models inside LangChain's wrappers of one (``.bind(...)``, ``.with_fallbacks()``):
found, numbered and rebuilt in the order LangChain tries them.

Every chat model in a wrapper is a *member* of it, numbered in that order (the primary first,
then each fallback): a call's :class:`~multiagent.models._chain_watch.ChainWatch` knows each
member by its number, and a call sent past paused members runs the wrapper trimmed of them
(:func:`without_first`).

Retries are the pipeline's alone (:mod:`multiagent.models.retry`): a client's own retries would
multiply every failed call by the client's attempts, each a request the rate limiter never sees.
:func:`without_own_retries` turns a member's off (``max_retries=0``, on clients built from it),
and a ``.with_retry()`` wrapper is refused where the model is brought (see
:func:`multiagent.models.factory.choose_model`).
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.runnables import Runnable
from langchain_core.runnables.base import RunnableBindingBase
from langchain_core.runnables.fallbacks import RunnableWithFallbacks
from langchain_core.runnables.retry import RunnableRetry

from multiagent.models._chain_watch import MEMBER_KEY


def wrapped_chat_model(runnable: Runnable[Any, Any]) -> BaseChatModel | None:
    """The chat model inside LangChain's wrappers of one (the one tried first), else ``None``."""
    inner: Any = runnable
    while not isinstance(inner, BaseChatModel):
        if isinstance(inner, RunnableBindingBase):  # .bind, .with_config
            inner = inner.bound
        elif isinstance(inner, RunnableWithFallbacks):
            inner = inner.runnable
        else:
            return None
    return inner


def chat_models_in(runnable: Runnable[Any, Any]) -> list[Runnable[Any, Any]]:
    """Every chat model of a wrapper in the order LangChain tries them; a part that is neither
    a chat model nor a wrapper of one is listed as it is (the caller refuses it)."""
    if isinstance(runnable, BaseChatModel):
        return [runnable]
    if isinstance(runnable, RunnableBindingBase):
        return chat_models_in(runnable.bound)
    if isinstance(runnable, RunnableWithFallbacks):
        found = chat_models_in(runnable.runnable)
        for fallback in runnable.fallbacks:
            found.extend(chat_models_in(fallback))
        return found
    return [runnable]


def retrying_wrapper(runnable: Runnable[Any, Any]) -> bool:
    """Whether a ``.with_retry()`` wrapper is part of ``runnable``."""
    if isinstance(runnable, RunnableRetry):
        return True
    if isinstance(runnable, RunnableBindingBase):
        return retrying_wrapper(runnable.bound)
    if isinstance(runnable, RunnableWithFallbacks):
        return any(map(retrying_wrapper, [runnable.runnable, *runnable.fallbacks]))
    return False


def rebuilt(
    runnable: Runnable[Any, Any], member: Callable[[BaseChatModel], BaseChatModel]
) -> Runnable[Any, Any]:
    """A copy of the wrapper with each chat model replaced by ``member(model)``, in try order."""
    if isinstance(runnable, BaseChatModel):
        return member(runnable)
    if isinstance(runnable, RunnableBindingBase):
        return runnable.model_copy(update={"bound": rebuilt(runnable.bound, member)})
    if isinstance(runnable, RunnableWithFallbacks):
        first = rebuilt(runnable.runnable, member)
        rest = [rebuilt(fallback, member) for fallback in runnable.fallbacks]
        return runnable.model_copy(update={"runnable": first, "fallbacks": rest})
    raise TypeError(f"{type(runnable).__name__} holds no chat model")


def without_first(runnable: Runnable[Any, Any], skip: int) -> Runnable[Any, Any] | None:
    """The wrapper trying only its members from number ``skip`` on, in the same order (each
    kept in its own bindings); ``None`` when it has no more members than that."""
    if skip <= 0:
        return runnable
    if isinstance(runnable, RunnableBindingBase):
        rest = without_first(runnable.bound, skip)
        return None if rest is None else runnable.model_copy(update={"bound": rest})
    if not isinstance(runnable, RunnableWithFallbacks):
        return None  # a chat model: one member, skipped
    parts: list[Runnable[Any, Any]] = []
    for part in [runnable.runnable, *runnable.fallbacks]:
        kept = without_first(part, skip)
        skip -= len(chat_models_in(part))
        if kept is not None:
            parts.append(kept)
    if len(parts) < 2:
        return parts[0] if parts else None
    return runnable.model_copy(update={"runnable": parts[0], "fallbacks": parts[1:]})


def numbered_members(runnable: Runnable[Any, Any]) -> Runnable[Any, Any]:
    """The wrapper with each member's number in its run metadata."""
    count = itertools.count()

    def numbered(model: BaseChatModel) -> BaseChatModel:
        metadata = {**(model.metadata or {}), MEMBER_KEY: next(count)}
        return model.model_copy(update={"metadata": metadata})

    return rebuilt(runnable, numbered)


def without_own_retries(model: BaseChatModel) -> BaseChatModel:
    """``model`` with its client's own retries off, where it has a ``max_retries`` field.

    Setting the field on a copy is not enough where the client was built from it at
    construction: the OpenAI SDK clients of ``langchain-openai`` models are copied with
    ``max_retries=0`` too, and clients built lazily from the field (cached properties) are
    built again by the copy. A model without the field is returned as it is.
    """
    if "max_retries" not in type(model).model_fields:
        return model
    update: dict[str, Any] = {"max_retries": 0}
    for root, endpoint in (("root_client", "client"), ("root_async_client", "async_client")):
        client = getattr(model, root, None)
        if client is not None and callable(getattr(client, "with_options", None)):
            quiet = client.with_options(max_retries=0)
            update[root] = quiet
            update[endpoint] = quiet.chat.completions
    copy = model.model_copy(update=update)
    for name in _cached_properties(type(copy)):
        copy.__dict__.pop(name, None)
    return copy


@functools.cache
def _cached_properties(cls: type) -> tuple[str, ...]:
    return tuple(
        name
        for klass in cls.__mro__
        for name, value in vars(klass).items()
        if isinstance(value, functools.cached_property)
    )
