"""``ChatOpenAI`` for OpenAI-compatible servers: the output bound under both of its names.

langchain-openai sends a call's ``max_tokens`` as ``max_completion_tokens`` (OpenAI's newer
name). llama-cpp-python's server reads only ``max_tokens`` and ignores the other, so a bounded
call ran until the context was full and timed out (seen against it, with the packaged SmolLM2).
With a base URL set, the bound is sent under both names; OpenAI itself keeps the plain model.
"""

from __future__ import annotations

from typing import Any

from langchain_core.language_models import LanguageModelInput
from langchain_openai import ChatOpenAI


class CompatibleChatOpenAI(ChatOpenAI):
    """``ChatOpenAI`` that also sends ``max_tokens`` for servers that read only that name."""

    def _get_request_payload(
        self, input_: LanguageModelInput, *, stop: list[str] | None = None, **kwargs: Any
    ) -> dict[str, Any]:
        payload: dict[str, Any] = super()._get_request_payload(input_, stop=stop, **kwargs)
        bound = payload.get("max_completion_tokens")
        if bound is not None:
            payload.setdefault("max_tokens", bound)
        return payload


__all__ = ["CompatibleChatOpenAI"]
