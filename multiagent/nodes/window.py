"""Keep every call inside the model's context window, with room for its bounded output.

A meeting's transcript grows with every turn; a small local model has 4,096 tokens (llama.cpp's
default). Before a call, :func:`fit_to_window` measures the prompt (tiktoken, with a margin: the
model's own tokenizer differs) and, when prompt plus the node's output bound would not fit,
drops older material first: a tool loop's oldest whole rounds (each answer with the tool results
that reply to it), then the middle of the longest message, keeping its first paragraph (the task)
and its end (the latest turns of a transcript) with a marker saying what was left out. System
prompts, the task (the first other message), the last round and the last message's opening
always stay. A window that cannot hold even that is a configuration error.

The window comes from the profile (``models.context_window_tokens``, set by the ``local``
provider to llama.cpp's ``n_ctx``), else from the model itself (a ``context_window`` attribute,
as :class:`~multiagent.models.local.LocalChatModel` has), else there is none and nothing is cut.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from langchain_core.messages import BaseMessage, SystemMessage, ToolMessage

from multiagent.errors import ConfigError
from multiagent.models.tokens import count_tokens, prompt_tokens

#: tiktoken's count times this bounds the model's own count (small vocabularies split more).
TOKENIZER_MARGIN = 1.3
#: What replaces text left out.
OMITTED = "\n[… earlier text omitted to fit the model's context …]\n"
_HEAD_SHARE = 0.25  # at most this share of a shortened message is its opening


def window_of(profile_window: int | None, model: Any) -> int | None:
    """The context window to fit calls into: configured, else the model's own, else ``None``."""
    if profile_window is not None:
        return profile_window
    inner = getattr(model, "provider_model", model)
    window = getattr(inner, "context_window", None)
    return window if isinstance(window, int) else None


def _estimate(messages: Sequence[BaseMessage]) -> int:
    return math.ceil(prompt_tokens(messages) * TOKENIZER_MARGIN)


def _shorten(text: str, *, keep_tokens: int) -> str:
    """``text`` cut in the middle to about ``keep_tokens``: its opening and its end stay."""
    if keep_tokens <= 0:
        return OMITTED.strip()
    ratio = len(text) / max(1, count_tokens(text) * TOKENIZER_MARGIN)
    keep_chars = int(keep_tokens * ratio)
    first_break = text.find("\n\n")
    head_len = first_break if 0 <= first_break <= keep_chars * _HEAD_SHARE else 0
    head_len = head_len or int(keep_chars * _HEAD_SHARE)
    tail_len = max(0, keep_chars - head_len - len(OMITTED))
    return text[:head_len] + OMITTED + (text[-tail_len:] if tail_len else "")


def fit_to_window(
    messages: Sequence[BaseMessage], *, window: int | None, reserve: int
) -> list[BaseMessage]:
    """``messages`` shortened, if need be, so prompt + ``reserve`` output tokens fit ``window``.

    Args:
        messages: The prompt.
        window: The model's context in tokens; ``None`` leaves the prompt as it is.
        reserve: Output tokens the call may produce (the node's ``max_tokens``).

    Raises:
        ConfigError: The window cannot hold the output bound and the prompt's essentials.
    """
    out = list(messages)
    if window is None:
        return out
    budget = window - reserve
    if _estimate(out) <= budget:
        return out
    # older whole rounds first: after the task (the first message that is not a system
    # prompt), an answer with the tool results that reply to it, never the last round; a tool
    # result without the call it answers is a request a provider refuses
    first = next((i for i, m in enumerate(out) if not isinstance(m, SystemMessage)), len(out))
    while _estimate(out) > budget:
        end = first + 2
        while end < len(out) and isinstance(out[end], ToolMessage):
            end += 1
        if end >= len(out):
            break
        del out[first + 1 : end]
    for _ in range(3):  # a second pass corrects the chars-per-token guess
        excess = _estimate(out) - budget
        if excess <= 0:
            return out
        longest = max(range(len(out)), key=lambda i: len(str(out[i].text)))
        text = str(out[longest].text)
        keep = math.floor(count_tokens(text) * TOKENIZER_MARGIN) - excess - 8
        out[longest] = out[longest].model_copy(update={"content": _shorten(text, keep_tokens=keep)})
    if _estimate(out) > budget:
        raise ConfigError(
            f"the model's context of {window} tokens cannot hold the smallest prompt "
            f"({_estimate(out)} tokens) plus {reserve} output tokens; configure a larger "
            f"models.context_window_tokens or use a model with a larger context"
        )
    return out


__all__ = ["OMITTED", "TOKENIZER_MARGIN", "fit_to_window", "window_of"]
