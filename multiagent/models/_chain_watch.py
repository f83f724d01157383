"""What the members of a brought wrapper did during one call of it.

Every chat model in a wrapper is a *member* of it, numbered in the order LangChain tries them
(the primary first, then each fallback). A member answering for the primary is a different model
at a different price, so a call is recorded under the member that answered and each member that
failed before it gets a failed call of its own (see :mod:`multiagent.models._chain_call`): while
the wrapper runs, a :class:`ChainWatch` of the call hears each member start, fail or answer,
knowing it by the member's number in its run metadata. The watch also tells the backpressure
controller pacing the call of the failure of the member tried first (the primary, or the
fallback a paused primary is skipped for:
:meth:`~multiagent.models._runnable_model.RunnableChatModel.from_member`), and an answer names
the member that gave it (:data:`ANSWERED_BY`), for a cache hit of it to be recorded as that
member.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import BaseMessage
from langchain_core.outputs import LLMResult

from multiagent.models._bp_wait import Passage

#: Run-metadata key of a member's number, by which a :class:`ChainWatch` knows it.
MEMBER_KEY = "multiagent_member"
#: Keyword argument a call of the pipeline hands its :class:`ChainWatch` in (taken out before
#: the wrapper is invoked).
WATCH_ARG = "_multiagent_chain_watch"
#: Key of the answering member's model name in an answer's ``generation_info``: kept with the
#: answer in the completion cache, so a hit of it is recorded and priced as that member.
ANSWERED_BY = "multiagent_answered_by"


@dataclass(frozen=True)
class MemberFailure:
    """A member that failed during one call of the wrapper.

    Attributes:
        index: The member's number.
        error: What it raised.
        usage: Input and output tokens it reported before failing, if any.
        latency_s: Seconds from its start to its failure.
    """

    index: int
    error: BaseException
    usage: tuple[int, int] | None
    latency_s: float


class ChainWatch(BaseCallbackHandler):
    """What the members of a wrapper did during one call: which started last, which failed.

    Reset by each call of the wrapper (an attempt of the pipeline's retry loop), so it tells of
    the last one.

    ``passage`` is the attempt's way through the controller pacing the member tried first
    (``first``: the primary, or the fallback a paused primary was skipped for): that member's
    failure is reported through it the moment it happens, as a plain model's failure is,
    though a later member may still answer (see :mod:`multiagent.models._chain_call`).
    """

    run_inline = True  # cheap, and in the order the members run

    def __init__(self) -> None:
        super().__init__()
        self.passage: Passage | None = None
        self.first = 0
        self.begin()

    def begin(self) -> None:
        """Forget what an earlier call did."""
        self._started: dict[UUID, tuple[int, float]] = {}
        self.failures: list[MemberFailure] = []
        self.last: int | None = None

    def on_chat_model_start(
        self,
        serialized: dict[str, Any],
        messages: list[list[BaseMessage]],
        *,
        run_id: UUID,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        """Note a member starting."""
        index = (metadata or {}).get(MEMBER_KEY)
        if isinstance(index, int):
            self._started[run_id] = (index, time.perf_counter())
            self.last = index

    def on_llm_error(
        self,
        error: BaseException,
        *,
        run_id: UUID,
        response: LLMResult | None = None,
        **kwargs: Any,
    ) -> None:
        """Note a member failing, with the tokens it reported, if any."""
        found = self._started.pop(run_id, None)
        if found is None:
            return
        index, began = found
        used = _usage(response)
        self.failures.append(MemberFailure(index, error, used, time.perf_counter() - began))
        if index == self.first and self.passage is not None and isinstance(error, Exception):
            # the passage takes one report: the fallback's answer is not told of after it
            self.passage.failed(error)

    def answer_info(self, members: Sequence[tuple[str, str]]) -> dict[str, Any] | None:
        """The ``generation_info`` naming the member that answered (the one started last)."""
        if self.last is None or self.last >= len(members):
            return None
        return {ANSWERED_BY: members[self.last][1]}


def _usage(response: LLMResult | None) -> tuple[int, int] | None:
    """Input and output tokens reported in a failed run's partial response, if any."""
    seen = False
    tokens_in = tokens_out = 0
    for generations in response.generations if response is not None else []:
        for generation in generations:
            usage = getattr(getattr(generation, "message", None), "usage_metadata", None)
            if usage:
                seen = True
                tokens_in += int(usage.get("input_tokens", 0))
                tokens_out += int(usage.get("output_tokens", 0))
    return (tokens_in, tokens_out) if seen else None
