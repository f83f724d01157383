"""LangChain messages and tool choices in the shape llama.cpp's chat handler takes."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage, ToolMessage

#: OpenAI's chat role of each LangChain message type.
OPENAI_ROLES = {"system": "system", "human": "user", "ai": "assistant", "tool": "tool"}


def as_openai_messages(messages: Sequence[BaseMessage]) -> list[dict[str, Any]]:
    """OpenAI-style message dicts; every ``content`` is a string.

    GGUF chat templates (SmolLM2's among them) concatenate ``content`` as text, so an assistant
    turn that only called tools carries the calls as JSON in its content: the model then sees
    what it asked for before the tool's result.
    """
    out: list[dict[str, Any]] = []
    for message in messages:
        role = OPENAI_ROLES.get(message.type, "user")
        content = str(message.text)
        item: dict[str, Any] = {"role": role, "content": content}
        if isinstance(message, AIMessage) and message.tool_calls:
            item["tool_calls"] = [
                {
                    "id": call["id"] or "",
                    "type": "function",
                    "function": {"name": call["name"], "arguments": json.dumps(call["args"])},
                }
                for call in message.tool_calls
            ]
            if not content:
                item["content"] = json.dumps(
                    [{"name": c["name"], "arguments": c["args"]} for c in message.tool_calls]
                )
        if isinstance(message, ToolMessage):
            item["tool_call_id"] = message.tool_call_id
        out.append(item)
    return out


def forced_tool_choice(tools: list[dict[str, Any]], choice: Any) -> Any:
    """OpenAI's ``tool_choice`` as llama.cpp forces it: a ``{"type": "function", ...}`` dict.

    llama.cpp builds a grammar only for a dict naming one tool; a bare name, or ``"any"`` /
    ``"required"`` / ``True`` with exactly one tool, mean the same and are turned into it.
    ``"auto"``, ``"none"`` and ``None`` pass as they are.
    """
    names = [tool["function"]["name"] for tool in tools]
    if isinstance(choice, dict):
        return choice
    wanted: str | None = None
    if choice in ("any", "required", True) and len(names) == 1:
        wanted = names[0]
    elif isinstance(choice, str) and choice in names:
        wanted = choice
    if wanted is None:
        return choice if choice in (None, "auto", "none") else "auto"
    return {"type": "function", "function": {"name": wanted}}


__all__ = ["OPENAI_ROLES", "as_openai_messages", "forced_tool_choice"]
