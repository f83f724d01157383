"""Failures a node may meet from the world, as opposed to bugs in our code.

A provider call that still fails after the pipeline's retries raises one of
:func:`provider_errors`; so does a structured call whose every step failed to validate
(:class:`StructuredOutputError`, see :mod:`multiagent.models.structured`). Validators record such
a failure (the validator is "not answering") and let the others decide; the planner falls back to
a default split and the moderator to "no consensus, agreement unknown"; other nodes let it end
the run, which stays resumable from its last checkpoint. A pydantic ``ValidationError`` is not
among them: the ladder turns a model's invalid answer into :class:`StructuredOutputError`, so a
``ValidationError`` that reaches a node is a bug in our code and surfaces as one.
"""

from __future__ import annotations

import sys

import httpx
import tenacity
from langchain_core.exceptions import OutputParserException

from multiagent.models.structured import StructuredOutputError
from multiagent.safety import redact_text

_ERRORS: tuple[type[BaseException], ...] = (
    httpx.HTTPError,
    tenacity.RetryError,
    TimeoutError,
    ConnectionError,
    OutputParserException,
    StructuredOutputError,
)


def provider_errors() -> tuple[type[BaseException], ...]:
    """What a model call may raise after retries that is not a bug and not a budget stop.

    Called in the ``except`` clause, when an error is being handled: the ``openai`` SDK's
    errors are among them once the SDK is loaded (an error of its types means it is), and a
    run that never talks to OpenAI does not pay for importing it.
    """
    openai = sys.modules.get("openai")
    return _ERRORS if openai is None else (openai.APIError, *_ERRORS)


def describe_error(exc: BaseException, *, redact: bool = False) -> str:
    """One line naming an error's type and message; with ``redact`` (the profile's
    ``features.pii_redaction``) its personal values and secrets as placeholders.

    A provider's error may echo what it was sent, an ``Authorization`` header included, and the
    line is stored (a validator's failure in the checkpoints, a run's outcome in the live runs
    file): redacted before it is kept.
    """
    text = " ".join(str(exc).split()) or "no message"
    line = f"{type(exc).__name__}: {text}"
    return (redact_text(line).text if redact else line)[:300]


__all__ = ["StructuredOutputError", "describe_error", "provider_errors"]
