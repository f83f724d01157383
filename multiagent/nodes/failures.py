"""Failures a node may meet from the world, as opposed to bugs in our code.

A provider call that still fails after the pipeline's retries raises one of
:data:`PROVIDER_ERRORS`. Validators record such a failure and let the others decide; other nodes
let it end the run, which stays resumable from its last checkpoint.
"""

from __future__ import annotations

import httpx
import openai
import tenacity
from langchain_core.exceptions import OutputParserException
from pydantic import ValidationError

from multiagent.errors import MultiagentError


class StructuredOutputError(MultiagentError):
    """The model did not return the structured answer it was asked for."""


#: What a model call may raise after retries that is not a bug and not a budget stop.
PROVIDER_ERRORS: tuple[type[BaseException], ...] = (
    openai.APIError,
    httpx.HTTPError,
    tenacity.RetryError,
    TimeoutError,
    ConnectionError,
    OutputParserException,
    ValidationError,
    StructuredOutputError,
)


def describe_error(exc: BaseException) -> str:
    """One line naming an error's type and message."""
    text = " ".join(str(exc).split()) or "no message"
    return f"{type(exc).__name__}: {text}"[:300]
