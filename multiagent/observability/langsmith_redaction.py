"""LangSmith is sent placeholders, never personal values, for a run whose profile redacts.

A run's input is redacted where it enters and every prompt before it leaves, but a tool's
result is not an input: a tool (a CRM lookup, a search) brings personal values into the run from
outside, and LangChain's tracer sends them to LangSmith as the tool run's output, as they came.
So such a run is traced through a LangSmith client whose ``anonymizer`` (LangSmith's own hook,
applied to the inputs, outputs and error of every run the client sends) is
:func:`~multiagent.safety.redact_value`: whatever reaches a run's payload, from wherever, leaves
the process as placeholders. A run's metadata (thread id, profile, correlation id) is left as
it is, so a trace can still be found.

The client is made once per process (it owns a background sender); :func:`flush_redacting_client`
waits for what it has not sent yet (:func:`~multiagent.observability.tracing.shutdown_tracing`
calls it).
"""

from __future__ import annotations

import functools
import threading
from typing import Any

from langchain_core.tracers.langchain import LangChainTracer
from langsmith import Client
from langsmith.utils import tracing_is_enabled

from multiagent.safety import redact_value

_MADE = threading.Event()


def _anonymize(payload: dict[str, Any]) -> dict[str, Any]:
    """A run's JSON payload with every string redacted (not counted: nothing was stored)."""
    return redact_value(payload, record=False)


@functools.cache
def _redacting_client() -> Client:
    """The process's LangSmith client for runs that redact (endpoint and key from the env)."""
    _MADE.set()
    return Client(anonymizer=_anonymize)


def redacting_tracer() -> LangChainTracer | None:
    """A LangChain tracer whose runs reach LangSmith redacted; ``None`` when LangSmith does not
    trace (``LANGSMITH_TRACING`` off)."""
    if not tracing_is_enabled():
        return None
    return LangChainTracer(client=_redacting_client())


def flush_redacting_client() -> None:
    """Wait until the runs traced through :func:`redacting_tracer` have been sent."""
    if _MADE.is_set():
        _redacting_client().flush()
