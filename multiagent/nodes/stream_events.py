"""The ``custom`` stream events nodes emit: what an agent does, what it cost, what was judged.

LangGraph delivers them to ``graph.stream(..., stream_mode="custom")`` (and to LangGraph Server's
``custom`` stream) through :func:`langgraph.config.get_stream_writer`. Each event is a small
``TypedDict`` with a ``type`` key, so a consumer can switch on it and the payload stays plain JSON:

- ``agent_started`` / ``agent_finished``: one agent's work in one node, the finish with its calls,
  tokens and cost (and the error's type when it raised);
- ``moderator``: the moderator's judgement of a meeting round (``agreement`` is ``None`` when it
  gave no valid judgement);
- ``verdict``: one validator's verdict on one text;
- ``item_result``: the consensus (or its absence) on one validated item.

Outside a graph run (a node called directly in a test) emitting does nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Literal

from langgraph.config import get_stream_writer
from typing_extensions import TypedDict

from multiagent.nodes.usage import Usage

__all__ = [
    "AgentFinished",
    "AgentStarted",
    "ItemDecided",
    "ModeratorJudgement",
    "StreamEvent",
    "VerdictGiven",
    "agent_step",
    "emit",
]


class AgentStarted(TypedDict):
    """An agent began its work in a node."""

    type: Literal["agent_started"]
    node: str
    agent: str


class AgentFinished(TypedDict):
    """An agent finished its work in a node: what its calls used, and its error if it raised."""

    type: Literal["agent_finished"]
    node: str
    agent: str
    calls: int
    input_tokens: int
    output_tokens: int
    cost_usd: float
    cache_hits: int
    seconds: float
    error: str | None


class ModeratorJudgement(TypedDict):
    """The moderator's judgement of one meeting round."""

    type: Literal["moderator"]
    round: int
    consensus: bool
    agreement: float | None
    open_questions: list[str]
    note: str


class VerdictGiven(TypedDict):
    """One validator's verdict on one text."""

    type: Literal["verdict"]
    key: str
    validator: str
    passed: bool
    confidence: float
    cached: bool


class ItemDecided(TypedDict):
    """The consensus on one validated item: ``passed``, ``failed`` or ``inconclusive``."""

    type: Literal["item_result"]
    id: str
    status: str
    approval: float
    responded: int
    quorum: int


#: What ``agent_finished`` copies from the agent's usage entry.
_FIGURES = ("calls", "input_tokens", "output_tokens", "cost_usd", "cache_hits", "seconds")

StreamEvent = AgentStarted | AgentFinished | ModeratorJudgement | VerdictGiven | ItemDecided


def _writer() -> Callable[[Any], None]:
    """The run's stream writer; a no-op outside a graph run."""
    try:
        return get_stream_writer()
    except (RuntimeError, KeyError):  # no runnable context: a node called directly
        return lambda _event: None


def emit(event: StreamEvent) -> None:
    """Send ``event`` to the run's ``custom`` stream (nothing happens when nobody streams it)."""
    _writer()(event)


@contextmanager
def agent_step(node: str, agent: str, usage: Callable[[], Usage]) -> Iterator[None]:
    """Emit ``agent_started`` now and ``agent_finished`` (with ``usage()``) on any exit.

    Args:
        node: The node the agent works in.
        agent: The agent's name.
        usage: Returns what the agent's calls used so far (read once, at the end).
    """
    write = _writer()
    write(AgentStarted(type="agent_started", node=node, agent=agent))
    error: str | None = None
    try:
        yield
    except BaseException as exc:
        error = type(exc).__name__
        raise
    finally:
        used = usage()
        figures = {key: used[key] for key in _FIGURES}  # type: ignore[literal-required]
        # an AgentFinished: the usage entry's figures under the same names
        write({"type": "agent_finished", "node": node, "agent": agent, **figures, "error": error})
