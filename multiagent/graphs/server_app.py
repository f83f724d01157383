"""LangGraph Server's HTTP app (``langgraph.json``: ``"http": {"app": ...}``): the server
process's metrics reach the history of its ``MULTIAGENT_HOME``, its runs are traced, and its
metrics are served beside the server's own routes.

The server merges this app into its own and runs :data:`app`'s lifespan inside its own, in the
API process and in every queue worker process (``langgraph_api.queue_entrypoint``) alike: the
processes that run graphs. Its start does what ``configure_tracing(settings)`` does for a CLI
command (:func:`~multiagent.observability.tracing.configure_tracing`): the process's metrics
are persisted into ``<home>/metrics.sqlite`` every ``MULTIAGENT_METRICS_EXPORT_S`` seconds
(300), and spans go to ``OTEL_EXPORTER_OTLP_ENDPOINT`` when it is set; a run of our graphs then
adds the OpenTelemetry handler itself (:mod:`multiagent.graphs.redacting`). Its end persists
what was counted since and flushes the spans left: uvicorn answers SIGTERM with a graceful
shutdown (this lifespan's end) and then raises the signal again with its default action, which
ends the process without running ``atexit`` hooks, so the metrics reader's exit export alone
would lose the last counts.

What SIGTERM does, in this order (uvicorn, ``langgraph_api``, ``langgraph_runtime_inmem``):
uvicorn stops accepting connections and waits for the open ones (a client streaming a run keeps
it waiting until that run ends), then ends the server's lifespan: LangGraph Server enters its
runtime's lifespan first and this app's second, so this app's end comes *first*, and only then
does the runtime cancel the runs still going (the queue cancels each run's task and gives them
5 s), close its stores and return; uvicorn raises SIGTERM again and the process dies. A run
cancelled there is given up (:mod:`multiagent.graphs.redacting`): its nodes' model calls end
``cancelled`` at their next check, tens of milliseconds later, after this app's final persist.
So the end of this app marks the process as closing, and while the server's shutdown lasts each
run that ends (:func:`~multiagent.graphs.redacting.watch_runs`) waits until no model call
of the process is still going (every run is being cancelled then, so those calls are theirs; at
most :data:`SETTLE_S`, within the runtime's 5 s) and persists
what is unpersisted; the runtime waits for that run's task, so it happens before the process
dies. The calls are watched by a callback handler LangChain adds to every callback manager of
the process (``register_configure_hook``), which sees a call's end after its record is counted.
Why not persist when any run ends: in normal operation the periodic and the final persists
cover every ended run, and a given-up run's calls end after its task does, so a persist at its
end would miss them anyway. Why not after the runtime's shutdown: nothing of ours runs there
(the process then dies by the signal). A CLI process never runs this lifespan and is unaffected.
A call at a real provider that outlasts the runtime's 5 s is lost with the process.

Each run of the server's graphs shows on the dashboard's live runs (``<home>/runs.sqlite``) while
it runs, as a CLI run does: this app gives each a
:class:`~multiagent.observability.live_recorder.LiveRunRecorder` (through
:func:`~multiagent.graphs.redacting.watch_runs`), whose events run on a worker thread (the
server's event loop must not wait for a commit; ``langgraph dev`` even refuses it).

Why not at import of :mod:`multiagent.graphs.studio`: that module is imported wherever the graphs
are wanted (drawing them, a notebook, a test), and tying such a process to a data directory's
history or starting an exporter's thread there would be a side effect nobody asked for. The
lifespan runs only where a server serves.

A state update (``threads.update_state``) that the graph's state schema does not allow is
answered 422 with one line (:func:`refuse_state_update`): the server merges this app's
exception handlers into its own, and the auth handler sees no update's values.

Routes, under ``/multiagent`` (LangGraph Server owns ``/metrics`` and ``/ok``):

- ``GET /multiagent/metrics``: Prometheus text (as ``multiagent metrics serve``'s ``/metrics``);
- ``GET /multiagent/metrics/summary``: the JSON of ``multiagent metrics show --json``, this
  process's unpersisted counts included.

They are not behind the server's auth handler (LangGraph Server leaves custom routes open unless
``enable_custom_route_auth``). With ``MULTIAGENT_METRICS_TOKEN`` set they need
``Authorization: Bearer <token>``; without it they answer requests naming a loopback host only,
as ``multiagent metrics serve`` does on loopback.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from contextvars import ContextVar
from typing import Any, NamedTuple
from uuid import UUID

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.runnables.config import ensure_config, merge_configs
from langchain_core.tracers.context import register_configure_hook

from multiagent.dashboard.security import TOKEN_ENV, Guard, check_bind
from multiagent.graphs.redacting import run_settings, watch_runs
from multiagent.graphs.state_updates import StateUpdateError
from multiagent.observability.exposition import CONTENT_TYPE
from multiagent.observability.history import persist_process
from multiagent.observability.server import metrics_summary, prometheus_text
from multiagent.observability.tracing import configure_tracing, shutdown_tracing
from multiagent.policies import Settings, load_settings

PREFIX = "/multiagent"


#: How long a run ended during the server's shutdown waits for the process's model calls to end
#: before it persists: below the 5 s LangGraph's in-memory runtime gives the runs it cancels.
SETTLE_S = 4.0
#: How often that wait looks.
_POLL_S = 0.02


class _CallsInProgress(BaseCallbackHandler):
    """The process's model calls that started and have not ended: a call reports its end
    after its record is counted. A provider model's run inside a call is part of that call."""

    run_inline = True  # a set's update: no hop to an executor

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: set[UUID] = set()

    @property
    def ignore_chain(self) -> bool:
        return True

    @property
    def ignore_agent(self) -> bool:
        return True

    @property
    def ignore_retriever(self) -> bool:
        return True

    @property
    def ignore_custom_event(self) -> bool:
        return True

    def on_chat_model_start(
        self, serialized: Any, messages: Any, *, run_id: UUID, parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> None:  # fmt: skip
        self._start(run_id, parent_run_id)

    def on_llm_start(
        self, serialized: Any, prompts: Any, *, run_id: UUID, parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> None:  # fmt: skip
        self._start(run_id, parent_run_id)

    def on_llm_end(self, response: Any, *, run_id: UUID, **kwargs: Any) -> None:
        self._end(run_id)

    def on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self._end(run_id)

    def _start(self, run_id: UUID, parent_run_id: UUID | None) -> None:
        with self._lock:
            if parent_run_id not in self._open:
                self._open.add(run_id)

    def _end(self, run_id: UUID) -> None:
        with self._lock:
            self._open.discard(run_id)

    def idle(self) -> bool:
        """Whether no model call of the process is going."""
        with self._lock:
            return not self._open


_CALLS = _CallsInProgress()
_watching = False


class _Closing(NamedTuple):
    """The server's shutdown, from this app's end until the server's lifespan (``task``) ends.

    (Not a dataclass: LangGraph Server runs this file as a module missing from ``sys.modules``,
    where ``dataclasses`` fails.)"""

    settings: Settings
    task: asyncio.Task[Any]


_closing: _Closing | None = None
#: The server's settings while this app's lifespan runs (its runs are recorded live meanwhile).
_serving: Settings | None = None


class _ServerRuns:
    """What this app adds around each run of the server's graphs (see the module)."""

    async def started(self, config: Any, *, workflow: str, context: Any) -> Any:
        """``config`` with a live recorder, so the run shows on the dashboard's live runs."""
        settings = _serving
        if settings is None:
            return config
        # the first run of a profile reads its settings' files: off the event loop
        recorder = await asyncio.to_thread(_live_recorder, settings, config, workflow, context)
        return config if recorder is None else merge_configs(config, {"callbacks": [recorder]})

    async def ended(self) -> None:
        """While the server shuts down: wait until the process's model calls ended (a given-up
        run's end at their next check), then persist them (see the module)."""
        closing = _closing
        if closing is None or closing.task.done():
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + SETTLE_S
        while not _CALLS.idle() and loop.time() < deadline:
            await asyncio.sleep(_POLL_S)
        await asyncio.to_thread(persist_process, closing.settings)


_RUNS = _ServerRuns()


def _live_recorder(settings: Settings, config: Any, workflow: str, context: Any) -> Any:
    """A recorder of the run into the live runs of the server's home (none without a thread),
    its budget the run's. Its events run on a worker thread: each commit is file I/O, which the
    server's event loop must not wait for."""
    from multiagent.nodes.context import WorkflowContext
    from multiagent.nodes.run_context import RunContext
    from multiagent.observability.live_recorder import LiveRunRecorder

    thread_id = ensure_config(config)["configurable"].get("thread_id")
    if not thread_id:
        return None
    if isinstance(context, WorkflowContext):
        budget = context.ledger.budget_usd
    else:
        try:
            given = RunContext.model_validate(context or {}).budget_usd
        except Exception:  # the run itself reports a bad context
            given = None
        budget = run_settings(context).profile.budget_usd if given is None else given
    recorder = LiveRunRecorder(
        settings.home, thread_id=str(thread_id), workflow=workflow, budget_usd=budget
    )
    recorder.run_inline = False
    return recorder


def _watch_calls() -> None:
    """Count the process's model calls (:data:`_CALLS`) and watch the server's runs
    (:data:`_RUNS`); once per process."""
    global _watching
    if not _watching:
        register_configure_hook(ContextVar("multiagent_model_calls", default=_CALLS), True)
        watch_runs(_RUNS)
        _watching = True


def _open(settings: Settings) -> None:
    """Tie the process to ``settings.home``'s history and set its tracing up."""
    configure_tracing(settings)


def _close(settings: Settings) -> None:
    """:func:`~multiagent.observability.history.persist_process`, then flush the spans left
    (at most a few seconds)."""
    try:
        persist_process(settings)
    finally:
        shutdown_tracing()


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    global _closing, _serving
    # settings read files, and the OTLP exporter's set-up imports: both off the event loop
    token = os.environ.get(TOKEN_ENV) or None
    check_bind("127.0.0.1", token)  # a token too short to be one is refused at start
    settings = await asyncio.to_thread(load_settings)
    await asyncio.to_thread(_open, settings)
    _watch_calls()
    _serving = settings
    app.state.multiagent_settings = settings
    app.state.multiagent_guard = Guard(token=token, public=token is not None)
    try:
        yield
    finally:
        _serving = None
        task = asyncio.current_task()
        if task is not None:  # the server's lifespan, which cancels the runs after this end
            _closing = _Closing(settings, task)
        await asyncio.to_thread(_close, settings)


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.multiagent_settings
    return settings


def _read(request: Request) -> None:
    """The token when one is set; else loopback host names only (as ``metrics serve``)."""
    guard: Guard = request.app.state.multiagent_guard
    guard.read(request)


app = FastAPI(
    title="multiagent on LangGraph Server",
    description="Model calls, tokens, cost, errors, latency and caches of this server's runs.",
    lifespan=_lifespan,
)


@app.exception_handler(StateUpdateError)
async def refuse_state_update(request: Request, exc: StateUpdateError) -> JSONResponse:
    """A state update the graph's state schema does not allow, refused before it is written
    (:mod:`multiagent.graphs.state_updates`): 422 with its one line, where the server would
    answer a ``ValueError`` with 400, and a ``TypeError`` a router raised on it with 500."""
    return JSONResponse({"detail": str(exc)}, status_code=422)


@app.get(f"{PREFIX}/metrics", dependencies=[Depends(_read)])
def prometheus(request: Request) -> PlainTextResponse:
    """Prometheus text: the history's totals, this process's unpersisted counts and gauges."""
    text = prometheus_text(_settings(request))
    return PlainTextResponse(text, media_type=CONTENT_TYPE)


@app.get(f"{PREFIX}/metrics/summary", dependencies=[Depends(_read)])
def summary(request: Request) -> dict[str, Any]:
    """Calls, tokens, cost, errors, latency and caches: ``multiagent metrics show --json``."""
    return metrics_summary(_settings(request))
