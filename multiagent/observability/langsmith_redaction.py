"""LangSmith is sent placeholders, never personal values, for a run whose profile redacts.

A run's input is redacted where it enters and every prompt before it leaves, but a tool's
result is not an input: a tool (a CRM lookup, a search) brings personal values into the run from
outside, and LangChain's tracer sends them to LangSmith as the tool run's output, as they came.
So such a run is traced through a LangSmith client whose ``anonymizer`` (LangSmith's own hook,
applied to the inputs, outputs, metadata and error of every run the client sends) is
:func:`~multiagent.safety.redact_value`: whatever reaches a run's payload, from wherever, leaves
the process as placeholders. Metadata holds no personal value (thread id, profile, correlation
id) and reads as it was, so a trace can still be found.

Whatever tracer the run is given redacts so (:func:`redacting_callbacks`): a caller's own
``LangChainTracer`` (a notebook's, a LangSmith evaluation's, ``tracing_v2_enabled``'s) is
replaced, for this run only, by a copy sending to the same project through a redacting twin of
its client: the same endpoints, API key, workspace, headers, timeouts, sampling and hiding, the
caller's own anonymizer applied first. The caller's tracer and client are left as they are (they
may trace other, non-redacting work). The copy shares the tracer's map of open runs, as
LangChain's own copies (``copy_with_metadata_defaults``) do, so a run started inside an
enclosing run's step stays that step's child in the same trace.

A client owns a background sender, so a twin is made once per caller client and kept as long as
that client lives (its sender then sends what is left and stops); with no tracer given, the
process's redacting client (endpoint and key from the environment) is made once.
:func:`flush_redacting_client` waits for what any of them has not sent yet;
:func:`~multiagent.observability.tracing.shutdown_tracing` gives them (and LangChain's default
client, :func:`langsmith_clients`) a few seconds at most.
"""

from __future__ import annotations

import functools
import threading
import weakref
from collections.abc import Callable, Sequence
from typing import Any

from langchain_core.callbacks import BaseCallbackHandler, BaseCallbackManager, Callbacks
from langchain_core.tracers.context import tracing_v2_callback_var
from langchain_core.tracers.langchain import LangChainTracer
from langchain_core.tracers.schemas import Run
from langsmith import Client
from langsmith.run_helpers import get_tracing_context
from langsmith.utils import tracing_is_enabled

from multiagent.safety import redact_value

Anonymizer = Callable[[dict[str, Any]], dict[str, Any]]

_LOCK = threading.Lock()
# a caller's client -> its redacting twin, dropped with the caller's client
_TWINS: weakref.WeakKeyDictionary[Client, Client] = weakref.WeakKeyDictionary()
# every redacting client alive: the process's and the twins
_REDACTING: weakref.WeakSet[Client] = weakref.WeakSet()


def _anonymize(payload: dict[str, Any], *, first: Anonymizer | None = None) -> dict[str, Any]:
    """A run's JSON payload with every string redacted (not counted: nothing was stored), after
    the caller's own anonymizer (``first``) when its client had one."""
    return redact_value(payload if first is None else first(payload), record=False)


def _redacting(**settings: Any) -> Client:
    """A new client that redacts every run it sends."""
    client = Client(anonymizer=settings.pop("anonymizer", _anonymize), **settings)
    _REDACTING.add(client)
    return client


@functools.cache
def _redacting_client() -> Client:
    """The process's LangSmith client for runs that redact (endpoint and key from the env)."""
    return _redacting()


def _same_destination(client: Client) -> dict[str, Any]:
    """The settings that make a new client send where ``client`` sends, as it sends."""
    # LangSmith keeps what a client was made with on the client; the hiding is private to it
    destinations = dict(getattr(client, "_write_api_urls", None) or {})
    theirs: Anonymizer | None = getattr(client, "_anonymizer", None)
    return {
        **(
            {"api_urls": destinations}  # runs written to several deployments
            if len(destinations) > 1
            else {"api_url": client.api_url, "api_key": client.api_key}
        ),
        "workspace_id": client.workspace_id,
        "headers": dict(client.headers),
        "timeout_ms": client.timeout_ms,
        "retry_config": client.retry_config,
        "tracing_sampling_rate": client.tracing_sample_rate,
        "tracing_mode": client.tracing_mode,
        "hide_inputs": getattr(client, "_hide_inputs", None),
        "hide_outputs": getattr(client, "_hide_outputs", None),
        "hide_metadata": getattr(client, "_hide_metadata", None),
        "omit_traced_runtime_info": getattr(client, "_omit_traced_runtime_info", False),
        "info": getattr(client, "_info", None),  # not asked again when the caller's knows it
        "anonymizer": _anonymize if theirs is None else functools.partial(_anonymize, first=theirs),
    }


def redacting_twin(client: Client) -> Client:
    """``client`` itself when it redacts, else its redacting twin (made once per client)."""
    if client in _REDACTING:
        return client
    with _LOCK:
        twin = _TWINS.get(client)
        if twin is None:
            twin = _TWINS[client] = _redacting(**_same_destination(client))
    return twin


def redacting_copy(tracer: LangChainTracer) -> LangChainTracer:
    """``tracer`` itself when its client redacts, else a copy of it (the same project, tags,
    metadata, example and open runs) sending through :func:`redacting_twin` of its client."""
    if tracer.client in _REDACTING:
        return tracer
    copy = tracer.copy_with_metadata_defaults()  # LangChain's copy: it shares the open runs
    copy.client = redacting_twin(tracer.client)
    persist, origin = copy._persist_run, weakref.ref(tracer)

    def persisted(run: Run) -> None:
        # the caller asks its own tracer for the run (``latest_run``, ``get_run_url()``)
        persist(run)
        given = origin()
        if given is not None:
            given.latest_run = copy.latest_run

    copy._persist_run = persisted  # type: ignore[method-assign]
    return copy


def redacting_callbacks(
    callbacks: Callbacks, *, copies: dict[int, LangChainTracer] | None = None
) -> Callbacks:
    """``callbacks`` (a list or a manager) with every LangSmith tracer sending through a
    redacting client (:func:`redacting_copy`); ``callbacks`` itself when all already do.

    Args:
        callbacks: A run's callbacks.
        copies: The copies made for the run so far, by ``id`` of the tracer copied: the
            callbacks of one run (its own, its enclosing run's) get one copy of a tracer.
    """
    if callbacks is None:
        return None
    copies = {} if copies is None else copies

    def copied(tracer: LangChainTracer) -> LangChainTracer:
        # one copy per tracer: a manager holds a tracer as a handler and as an inheritable one
        if id(tracer) not in copies:
            copies[id(tracer)] = redacting_copy(tracer)
        return copies[id(tracer)]

    def swapped(handlers: Sequence[BaseCallbackHandler]) -> list[BaseCallbackHandler]:
        return [copied(h) if isinstance(h, LangChainTracer) else h for h in handlers]

    if isinstance(callbacks, BaseCallbackManager):
        handlers, inheritable = swapped(callbacks.handlers), swapped(callbacks.inheritable_handlers)
        if _same([*handlers, *inheritable], [*callbacks.handlers, *callbacks.inheritable_handlers]):
            return callbacks
        manager = callbacks.copy()  # the parent run, tags and metadata are kept
        manager.handlers, manager.inheritable_handlers = handlers, inheritable
        return manager
    handlers = swapped(callbacks)
    return callbacks if _same(handlers, callbacks) else handlers


def _same(new: Sequence[object], old: Sequence[object]) -> bool:
    return all(a is b for a, b in zip(new, old, strict=True))


def redacting_tracer() -> LangChainTracer | None:
    """The tracer for a run that was given none, sending LangSmith placeholders: the one
    ``tracing_v2_enabled`` set (copied), else one through the client of the LangSmith trace
    the run is part of (a ``@traceable`` function's, ``tracing_context``'s) or the process's;
    ``None`` when LangSmith does not trace."""
    ambient = tracing_v2_callback_var.get()
    if ambient is not None:  # LangChain would trace through it whatever LANGSMITH_TRACING says
        return redacting_copy(ambient)
    if not tracing_is_enabled():
        return None
    context = get_tracing_context()
    parent = context["parent"]
    client = parent.client if parent is not None else context["client"]
    return LangChainTracer(client=_redacting_client() if client is None else redacting_twin(client))


def langsmith_clients() -> list[Client]:
    """The process's LangSmith clients: LangChain's default one (when made) and the redacting
    ones."""
    from langsmith import run_trees

    with _LOCK:
        clients = list(_REDACTING)
    default = getattr(run_trees, "_CLIENT", None)  # LangChain's tracers share this one
    return [*([default] if isinstance(default, Client) else []), *clients]


def flush_redacting_client() -> None:
    """Wait until the runs traced through a redacting client (the process's and the twins of
    callers' clients) have been sent."""
    with _LOCK:
        clients = list(_REDACTING)
    for client in clients:
        client.flush()
