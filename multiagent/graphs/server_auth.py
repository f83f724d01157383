"""LangGraph Server's request hook: a run's input is redacted before the server stores it.

The server copies a run's JSON input into the first checkpoint (the ``__start__`` channel and the
state of step 0) before any node runs, and no input schema or validator sees a dict input, so
redacting in the first node would leave the raw value in the thread's history. The one place
that sees the input before the server stores anything is its auth layer: a handler for
``threads.create_run`` receives the run's arguments by reference. ``langgraph.json`` names
:data:`auth`; when the run's profile (its ``context``, else the process's settings) switches
``features.pii_redaction`` on, the handler rewrites the input in place with the same
:func:`~multiagent.safety.redact_input` the CLI and the Python API use.

LangGraph requires an ``authenticate`` handler beside it. Ours admits every request, which is
what ``langgraph dev`` does with no auth configured; a deployment with its own authentication
replaces :func:`admit` with its check and keeps :func:`redact_run_input`.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any

from langgraph_sdk import Auth
from langgraph_sdk.auth.types import RunsCreate

from multiagent.nodes.run_context import RunContext
from multiagent.policies import load_settings
from multiagent.safety import redact_input

auth = Auth()


@auth.authenticate
async def admit() -> Auth.types.MinimalUserDict:
    """Every request is let through, as ``langgraph dev`` does without auth."""
    return {"identity": "anonymous", "permissions": []}


@auth.on.threads.create_run
async def redact_run_input(ctx: Auth.types.AuthContext, value: RunsCreate) -> None:
    """Redact the run's input in place when its profile says so; allow the run."""
    kwargs: dict[str, Any] = value.get("kwargs") or {}
    if kwargs.get("input") is None:
        return  # a resume (``Command``) or a run with no input: nothing new to store
    # settings read files and redaction is CPU work: both off the server's event loop
    kwargs["input"] = await asyncio.to_thread(_redacted, kwargs["input"], kwargs.get("context"))


def _redacted(payload: Any, context: Any) -> Any:
    try:
        spec = RunContext.model_validate(context or {})
        key = (spec.profile, spec.policy, spec.provider)
    except Exception:  # the run itself reports a bad context, naming the value
        key = (None, None, None)
    return redact_input(payload, enabled=_redaction_on(*key))


@functools.lru_cache(maxsize=32)
def _redaction_on(profile: str | None, policy: str | None, provider: str | None) -> bool:
    """Whether a run with these context values redacts PII (settings read once per set)."""
    try:
        settings = load_settings(env=profile, policy=policy, provider=provider)
    except Exception:
        settings = load_settings()
    return bool(settings.profile.features.pii_redaction)
