"""A LangChain callback handler that writes a run's progress to the live file as it happens.

:func:`~multiagent.observability.tracing.run_config` adds one to every run, so a
``multiagent run`` in any process shows on the dashboard: the run's row (status, current node,
tokens and cost so far, budget), node starts and ends, and each model call's streamed text.
LangGraph Server's app adds one to each run of the server (:mod:`multiagent.graphs.server_app`).

Streamed text is stored redacted (:func:`multiagent.models.redaction.redact_text`) over the
whole text so far, never token by token, so PII split across tokens is still found; the last
unfinished word is held back until the call ends, so half an e-mail address is never shown.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.outputs import LLMResult
from langgraph.errors import GraphBubbleUp

from multiagent.errors import BudgetExceededError
from multiagent.models.redaction import redact_text
from multiagent.observability.live import LiveWriter, live_writer
from multiagent.observability.otel import _stamped, _usage

#: At most one write of a call's streamed text per this many seconds.
STREAM_WRITE_S = 0.2
#: Characters of streamed text kept per model call (the newest).
STREAM_KEEP = 4000

_UPSERT_RUN = (
    "INSERT INTO runs (thread_id, workflow, pid, status, started, updated, budget_usd) "
    "VALUES (?, ?, ?, 'running', ?, ?, ?) ON CONFLICT (thread_id) DO UPDATE SET "
    "status = 'running', pid = excluded.pid, updated = excluded.updated, "
    "budget_usd = excluded.budget_usd"
)


def stopped_status(error: BaseException) -> str:
    """A run's status after ``error``: ``budget_exceeded``, ``interrupted`` (Ctrl-C, the run
    cancelled as LangGraph Server cancels one, or its stream closed by its caller before the
    end, a ``break``; also when it surfaced as another error raised while handling it) or
    ``failed``."""
    if isinstance(error, BudgetExceededError):
        return "budget_exceeded"
    seen: BaseException | None = error
    while seen is not None:
        # StopRequested is a KeyboardInterrupt
        if isinstance(seen, KeyboardInterrupt | asyncio.CancelledError | GeneratorExit):
            return "interrupted"
        seen = seen.__context__
    return "failed"


def shown_text(text: str, *, final: bool) -> str:
    """Redacted text fit for a page; while streaming, without its unfinished last word."""
    if not final:
        cut = max(text.rfind(" "), text.rfind("\n"))
        text = text[: cut + 1] if cut >= 0 else ""
    return redact_text(text[-STREAM_KEEP:]).text


class LiveRunRecorder(BaseCallbackHandler):
    """Record one run of ``workflow`` on thread ``thread_id`` into the live file.

    Args:
        home: The data directory (its ``runs.sqlite``).
        thread_id: The run's thread.
        workflow: The workflow's name.
        budget_usd: The run's budget, if any.
    """

    run_inline = True

    def __init__(
        self,
        home: Any,
        *,
        thread_id: str,
        workflow: str,
        budget_usd: float | None,
    ) -> None:
        import os

        self.writer: LiveWriter = live_writer(home)
        self.thread_id = thread_id
        self.workflow = workflow
        self.budget_usd = budget_usd
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._root: UUID | None = None
        self._waiting = False
        self._nodes: dict[UUID, str] = {}
        self._streams: dict[UUID, dict[str, Any]] = {}

    def _event(self, kind: str, node: str = "", agent: str = "", text: str = "") -> None:
        self.writer.put(
            "INSERT INTO events (at, thread_id, kind, node, agent, text) VALUES (?, ?, ?, ?, ?, ?)",
            (time.time(), self.thread_id, kind, node, agent, text),
        )

    def _status(self, status: str, node: str | None = None) -> None:
        self.writer.put(
            "UPDATE runs SET status = ?, updated = ?, node = COALESCE(?, node) WHERE thread_id = ?",
            (status, time.time(), node, self.thread_id),
        )

    def on_chain_start(
        self,
        serialized: dict[str, Any] | None,
        inputs: Any,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        """The graph's start opens the run's row; a node's start moves its current node."""
        if parent_run_id is None and self._root is None:
            self._root = run_id
            # the same recorder sees the resume of a run it saw pause (an approver answering
            # in run_workflow's loop, a notebook reusing its config): that run may complete
            self._waiting = False
            self.writer.begin()
            now = time.time()
            self.writer.put(
                _UPSERT_RUN,
                (self.thread_id, self.workflow, self._pid, now, now, self.budget_usd),
            )
            self._event("run_start")
            return
        node = (metadata or {}).get("langgraph_node")
        if node and kwargs.get("name") == node:
            with self._lock:
                self._nodes[run_id] = str(node)
            self._status("running", str(node))
            self._event("node_start", str(node))

    def on_chain_end(self, outputs: Any, *, run_id: UUID, **kwargs: Any) -> None:
        """A node's end, or the run's (``completed``, or ``waiting`` at an interrupt)."""
        self._end(run_id, "waiting" if self._waiting else "completed", "")

    def on_chain_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        """An interrupt marks the run waiting; the budget or Ctrl-C stop it as the CLI says
        (``budget_exceeded``, ``interrupted``); any other error of the graph fails it."""
        if isinstance(error, GraphBubbleUp):
            self._waiting = True
        failed = "waiting" if self._waiting else type(error).__name__
        self._end(run_id, "waiting" if self._waiting else stopped_status(error), failed)

    def _end(self, run_id: UUID, run_status: str, node_text: str) -> None:
        """The end of the graph (the run's status) or of one of its nodes."""
        if run_id == self._root:
            self._finish(run_status)
            return
        with self._lock:
            node = self._nodes.pop(run_id, None)
        if node is not None:
            self._event("node_end", node, text=node_text)

    def _finish(self, status: str) -> None:
        self._root = None
        self._status(status, "")
        self._event("run_end", text=status)
        self.writer.end()

    def on_llm_new_token(
        self, token: str | list[str | dict[str, Any]], *, run_id: UUID, **kwargs: Any
    ) -> None:
        """Add a streamed token to its call's text; write the text at most every 0.2 s."""
        if not isinstance(token, str):
            token = "".join(t if isinstance(t, str) else str(t.get("text", "")) for t in token)
        with self._lock:
            stream = self._streams.get(run_id)
            if stream is None:
                return
            stream["text"] += token
            due = time.monotonic() - stream["written"] >= STREAM_WRITE_S
            if due:
                stream["written"] = time.monotonic()
        if due:
            self._write_stream(run_id, stream, final=False)

    def on_chat_model_start(
        self,
        serialized: dict[str, Any] | None,
        messages: Any,
        *,
        run_id: UUID,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        """Open the call's stream, labelled with its node and agent."""
        meta = metadata or {}
        with self._lock:
            self._streams[run_id] = {
                "node": str(meta.get("langgraph_node", "")),
                "agent": str(meta.get("agent", "") or meta.get("langgraph_node", "")),
                "text": "",
                "written": 0.0,
            }

    def _write_stream(self, run_id: UUID, stream: dict[str, Any], *, final: bool) -> None:
        self.writer.put(
            "INSERT INTO events (at, thread_id, kind, node, agent, text) VALUES (?, ?, ?, ?, ?, ?)",
            (time.time(), self.thread_id, f"stream:{run_id}", stream["node"], stream["agent"],
             shown_text(stream["text"], final=final)),
        )  # fmt: skip

    def on_llm_end(self, response: LLMResult, *, run_id: UUID, **kwargs: Any) -> None:
        """Add the call's tokens and cost to the run; write its final text."""
        with self._lock:
            stream = self._streams.pop(run_id, None)
        if stream is not None and stream["text"]:
            self._write_stream(run_id, stream, final=True)
        record = _stamped(response) or {}
        tokens_in, tokens_out, _, _ = _usage(response)
        tokens_in = int(record.get("gen_ai.usage.input_tokens", tokens_in))
        tokens_out = int(record.get("gen_ai.usage.output_tokens", tokens_out))
        cost = float(record.get("multiagent.cost_usd", 0.0))
        self.writer.put(
            "UPDATE runs SET tokens_in = tokens_in + ?, tokens_out = tokens_out + ?, "
            "cost_usd = cost_usd + ?, updated = ? WHERE thread_id = ?",
            (tokens_in, tokens_out, cost, time.time(), self.thread_id),
        )

    def on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        """Drop the call's stream."""
        with self._lock:
            self._streams.pop(run_id, None)
