"""Failures a node may meet from the world, as opposed to bugs in our code.

A provider call that still fails after the pipeline's retries raises one of
:func:`provider_errors`. Validators record such a failure and let the others decide; other nodes
let it end the run, which stays resumable from its last checkpoint.
"""

from __future__ import annotations

import sys

import httpx
import tenacity
from langchain_core.exceptions import OutputParserException
from pydantic import ValidationError

from multiagent.errors import MultiagentError


class StructuredOutputError(MultiagentError):
    """The model did not return the structured answer it was asked for."""


_ERRORS: tuple[type[BaseException], ...] = (
    httpx.HTTPError,
    tenacity.RetryError,
    TimeoutError,
    ConnectionError,
    OutputParserException,
    ValidationError,
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


def describe_error(exc: BaseException) -> str:
    """One line naming an error's type and message."""
    text = " ".join(str(exc).split()) or "no message"
    return f"{type(exc).__name__}: {text}"[:300]
