"""What tracing and streaming read off an answer: its cost, and a cached answer's chunks.

- :func:`priced` puts a call's cost on its message's ``usage_metadata`` (``input_cost``,
  ``output_cost``, ``total_cost``: the fields LangSmith reads a run's cost from).
- :func:`replay_chunks` cuts a cached text answer into the chunks a stream would have carried,
  so a cache hit reaches LangGraph's ``messages`` stream as tokens, not one whole message.
- :func:`with_call_id` gives a cached answer the id of the call that served it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any
from uuid import UUID

from langchain_core.messages import AIMessage, AIMessageChunk
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.utils.utils import LC_ID_PREFIX

from multiagent.models.accounting import STAMP_KEY
from multiagent.policies.profiles import ModelPrice

#: How a cached answer is cut for replay: a word and the space after it.
_PIECE = re.compile(r"\S+\s*|\s+")


def priced(result: ChatResult, price: ModelPrice) -> ChatResult:
    """Put each stamped answer's cost on its ``usage_metadata`` (0 for a cache hit, and no
    tokens: the record's figures), and no earlier call's record on its metadata.

    The cost is the call record's, stamped on the generation; the message is replaced, not
    changed, so a copy the completion cache still holds is left as it was.
    """
    for generation in result.generations:
        record = (generation.generation_info or {}).get(STAMP_KEY)
        message = getattr(generation, "message", None)
        if not record or not isinstance(message, AIMessage):
            continue
        tokens_in = int(record["gen_ai.usage.input_tokens"])
        tokens_out = int(record["gen_ai.usage.output_tokens"])
        paid = not record["multiagent.cached"]
        counted = {
            "input_tokens": tokens_in,
            "output_tokens": tokens_out,
            "total_tokens": tokens_in + tokens_out,
        }
        # a cached answer's message holds the usage of the call that filled the cache: the
        # record's (no tokens) is what this call used
        usage: dict[str, Any] = dict(message.usage_metadata or counted) if paid else counted
        usage["input_cost"] = round(price.cost(tokens_in, 0), 10) if paid else 0.0
        usage["output_cost"] = round(price.cost(0, tokens_out), 10) if paid else 0.0
        usage["total_cost"] = float(record["multiagent.cost_usd"])
        # LangChain copies the generation's info (this call's record) into the message's
        # metadata unless the message has the key: a cached one has, from the call that filled
        # the cache (its cost, cached false)
        metadata = {k: v for k, v in message.response_metadata.items() if k != STAMP_KEY}
        generation.message = message.model_copy(
            update={"usage_metadata": usage, "response_metadata": metadata}
        )
    return result


def with_call_id(generations: list[ChatGeneration], run_id: UUID) -> None:
    """Give cached answers the id a fresh answer of call ``run_id`` would get, so one stream
    that meets the same cached answer twice shows it twice."""
    fresh = f"{LC_ID_PREFIX}-{run_id}"
    for generation in generations:
        generation.message = generation.message.model_copy(update={"id": fresh})


def replay_chunks(generations: list[ChatGeneration]) -> Iterator[ChatGenerationChunk]:
    """A cached text answer as stream chunks, each with the answer's id (a stream consumer then
    does not show the whole answer a second time when the call ends). A structured answer (tool
    calls) arrives whole, as nothing to read token by token."""
    for generation in generations[:1]:
        message = generation.message
        if isinstance(message, AIMessage) and message.tool_calls:
            continue
        for piece in _PIECE.findall(message.text):
            yield ChatGenerationChunk(message=AIMessageChunk(content=piece, id=message.id))
