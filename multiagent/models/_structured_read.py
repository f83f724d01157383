"""Reading a structured answer out of a reply: a tool call's arguments or JSON in text."""

from __future__ import annotations

import json
import re
from typing import Any

from langchain_core.messages import BaseMessage
from pydantic import ValidationError

from multiagent.models._structured_memory import Step

_FENCED = re.compile(r"```(?:json|JSON)?\s*(.*?)```", re.DOTALL)


def json_from_text(text: str) -> Any:
    """The JSON value in ``text``: the whole text, a fenced block, or the outermost ``{...}``.

    Raises:
        ValueError: No JSON object could be read.
    """
    candidates = [text.strip(), *(m.strip() for m in _FENCED.findall(text))]
    start, end = text.find("{"), text.rfind("}")
    if 0 <= start < end:
        candidates.append(text[start : end + 1])
    for candidate in candidates:
        try:
            # control characters inside strings (a raw newline) are accepted, as LangChain
            # accepts them in tool-call arguments: small models write them in JSON mode
            return json.loads(candidate, strict=False)
        # a degenerate reply (a small model repeating ``[`` to its bound) nests past the
        # parser's recursion limit: no JSON, as any other unreadable text
        except (ValueError, RecursionError):
            continue
    raise ValueError("the reply holds no JSON object")


def candidate(reply: BaseMessage, name: str) -> tuple[Any, bool]:
    """The answer a reply carries, and whether it came as a tool call: the named tool call's
    arguments (or the only tool call's), else JSON in its text."""
    calls = getattr(reply, "tool_calls", None) or []
    named = [call for call in calls if call["name"] == name]
    if named or len(calls) == 1:
        return (named or calls)[0]["args"], True
    return json_from_text(reply.text), False


def problem(exc: Exception) -> str:
    """The validation problem as the repair prompt states it."""
    if isinstance(exc, ValidationError):
        lines = [
            f"- {'.'.join(str(p) for p in err['loc']) or 'answer'}: {err['msg']}"
            for err in exc.errors()[:8]
        ]
        return "\n".join(lines)
    return f"- {exc}"


def answered_in_form(reply: BaseMessage, name: str, step: Step) -> bool:
    """Whether a reply is worth repairing: it answered, if wrongly, rather than said nothing.

    A forced tool call that came back as prose goes to the next step instead (which asks for
    JSON in another way); on the last step any reply is repaired.
    """
    if step == "text":
        return True
    calls = getattr(reply, "tool_calls", None) or []
    if calls:
        return True
    try:
        json_from_text(reply.text)
    except ValueError:
        return False
    return True
