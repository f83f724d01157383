"""What a watcher of a run sees: LangGraph's stream turned into :class:`WorkflowEvent` s.

The runner (:func:`~multiagent.graphs.runner.run_workflow`) streams with
``stream_mode=["tasks", "messages", "custom"]`` when someone watches, and :class:`StreamWatcher`
turns what LangGraph streams into events: a node starts or ends; a token of any agent arrives
(named after the agent, keyed by the task that produced it, so parallel agents stay apart); a
``custom`` event a node emitted (:mod:`multiagent.nodes.stream_events`: an agent's cost, a
moderator's judgement, a verdict). It also keeps each node's timing for the run's outcome.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from langchain_core.messages import AIMessageChunk

from multiagent.graphs.workflows import task_label


@dataclass(frozen=True)
class WorkflowEvent:
    """Something a watcher may show.

    ``start``/``end`` of a task (``task`` is its id); a ``token`` of ``agent`` in ``node`` (its
    ``task`` tells parallel agents apart); or a ``custom`` event a node emitted, in ``data``.
    """

    kind: Literal["start", "end", "token", "custom"]
    node: str
    label: str
    text: str = ""
    seconds: float = 0.0
    error: str | None = None
    agent: str = ""
    task: str = ""
    data: dict[str, Any] | None = None


def _error_text(error: object) -> str:
    """How a task's failure is shown: Ctrl-C or a run given up (no message) as ``interrupted``."""
    if isinstance(error, KeyboardInterrupt):
        return "interrupted"
    return str(error) or type(error).__name__


class StreamWatcher:
    """Turns LangGraph's stream into events and node timings."""

    def __init__(
        self,
        on_event: Callable[[WorkflowEvent], None] | None,
        *,
        kept: frozenset[str] = frozenset(),
    ) -> None:
        self.on_event = on_event
        self.started: dict[str, tuple[str, str, float]] = {}
        self.timings: list[dict[str, Any]] = []
        #: Tasks a resumed step finished before it stopped: LangGraph announces them again but
        #: applies their kept writes without running them, so nobody is shown them starting.
        self.kept = kept

    def _emit(self, event: WorkflowEvent) -> None:
        if self.on_event is not None:
            self.on_event(event)

    def task(self, data: dict[str, Any]) -> None:
        if data["id"] in self.kept:
            return
        if "input" in data:
            label = task_label(data["name"], data["input"])
            self.started[data["id"]] = (data["name"], label, time.perf_counter())
            self._emit(WorkflowEvent("start", data["name"], label, task=data["id"]))
            return
        name, label, began = self.started.pop(
            data["id"], (data["name"], data["name"], time.perf_counter())
        )
        seconds = round(time.perf_counter() - began, 4)
        error = data.get("error")
        if data.get("interrupts"):
            label += " (waiting)"
        self.timings.append({"node": name, "label": label, "seconds": seconds})
        failed = None if error is None else _error_text(error)
        recorded = data.get("result")
        if failed is None and isinstance(recorded, dict) and recorded.get("failures"):
            # a validator that gave no verdict returns (its failure recorded), it does not raise
            failed = f"no verdict: {recorded['failures'][0]['error']}"
        self._emit(
            WorkflowEvent("end", name, label, seconds=seconds, error=failed, task=data["id"])
        )

    def message(self, chunk: Any, metadata: dict[str, Any]) -> None:
        # text tokens only: a structured answer's tool-call chunks carry no text
        if not isinstance(chunk, AIMessageChunk) or not chunk.text:
            return
        node = str(metadata.get("langgraph_node", ""))
        agent = str(metadata.get("agent", "") or node)
        task = str(metadata.get("langgraph_checkpoint_ns", "")).rsplit(":", 1)[-1]
        self._emit(WorkflowEvent("token", node, agent, text=chunk.text, agent=agent, task=task))

    def custom(self, data: Any) -> None:
        if isinstance(data, dict) and "type" in data:
            node = str(data.get("node", ""))
            agent = str(data.get("agent", ""))
            self._emit(WorkflowEvent("custom", node, agent or node, agent=agent, data=data))
