"""The workflows' graphs redact what a run brings in, where LangGraph first sees it.

LangGraph writes a run's input to the thread's first checkpoint (the ``__start__`` channel)
before any node runs, and a ``Command``'s ``resume`` value and ``update`` to the checkpoint of
the step they continue; no node, input schema or validator sees them first. So a graph compiled
from :class:`WorkflowGraph` (what ``build_orchestration_graph``, ``build_meeting_graph`` and
``build_validation_graph`` return) redacts them in ``stream`` and ``astream`` (``invoke`` and
``ainvoke`` run through those) when the run's profile has ``features.pii_redaction`` on. The
profile is the one the run's ``context`` names: a
:class:`~multiagent.nodes.context.WorkflowContext`'s settings, or the plain values of a
:class:`~multiagent.nodes.run_context.RunContext` (the process's settings when there are none).
A notebook calling ``graph.invoke`` with a checkpointer and a redacting profile stores no raw
personal value, as the CLI does not. ``update_state`` (through ``bulk_update_state``, as LangGraph
Server's ``threads.update_state`` too) takes no context: its values are redacted when the
process's profile redacts. Such a run is also traced to LangSmith redacted (:func:`traced_config`):
what a tool brings into it is no run input, and would otherwise reach LangSmith as it came.

The runners (:func:`~multiagent.graphs.runner.run_workflow`) and LangGraph Server's request hook
(:mod:`multiagent.graphs.server_auth`, which sees a run before the server stores it in its own
run table) redact first; redacting their output again finds nothing (placeholders hold no
personal value) and changes nothing, ``--reveal-pii``'s numbered placeholders included.

LangGraph's ``StateGraph.compile`` builds a ``CompiledStateGraph`` by name, so
:meth:`WorkflowGraph.compile` gives the result this subclass's class; the subclass adds methods
only, no state. Copies LangGraph makes (``with_config``) keep the class.

A run its caller did not trace with OpenTelemetry (a LangGraph Server run: the CLI's runs carry
the handler already) is traced as the CLI traces its runs once the process set tracing up
(:func:`~multiagent.observability.tracing.configure_tracing`; on the server the HTTP app of
:mod:`multiagent.graphs.server_app` does): one trace named ``multiagent.<graph name>`` with the
run's profile, policy, provider, thread and correlation id. With no exporter configured the
check costs one read of a global.

A run its caller gives up (a cancelled ``astream``, a ``stream`` closed early) has its
``RunControl`` marked, so the nodes still running on LangGraph's threads stop at their next model
call or wait instead of finishing, and paying for, work nobody reads (see
:mod:`multiagent._interrupt`).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncGenerator, AsyncIterator, Generator, Iterator, Sequence
from contextlib import aclosing, contextmanager, suppress
from dataclasses import replace
from typing import Any, Protocol, cast

from langchain_core.callbacks import BaseCallbackManager
from langchain_core.runnables.config import (
    RunnableConfig,
    ensure_config,
    merge_configs,
    var_child_runnable_config,
)
from langchain_core.tracers.langchain import LangChainTracer
from langgraph.graph import StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.runtime import RunControl
from langgraph.types import Command, StateUpdate

from multiagent._interrupt import enclosing_control, give_up_run
from multiagent.graphs.state_updates import check_state_update
from multiagent.nodes.context import WorkflowContext
from multiagent.nodes.run_context import RunContext
from multiagent.observability.langsmith_redaction import redacting_callbacks, redacting_tracer
from multiagent.observability.tracing import Tracing, trace_run, untraced_run
from multiagent.policies import Settings, load_settings
from multiagent.safety import redact_input


class WorkflowGraph(StateGraph[Any, Any, Any, Any]):
    """A workflow's ``StateGraph``: compiled, it redacts every run's input (see the module)."""

    def compile(self, *args: Any, **kwargs: Any) -> CompiledStateGraph[Any, Any, Any, Any]:
        """``StateGraph.compile``, giving a graph that redacts what runs bring in."""
        compiled = super().compile(*args, **kwargs)
        compiled.__class__ = RedactingGraph
        return compiled


class RedactingGraph(CompiledStateGraph[Any, Any, Any, Any]):
    """A compiled workflow graph whose runs' input is redacted before LangGraph stores it."""

    def stream(
        self, input: Any, config: Any = None, *, context: Any = None, **kwargs: Any
    ) -> Iterator[Any]:
        """``CompiledStateGraph.stream`` with ``input`` redacted per the run's profile; closed
        before its end, it stops the run's nodes at their next model call or wait."""
        on = redaction_on(context)
        redacted = _redacted_run_input(input, on=on)
        control = _own_control(kwargs, config)
        traced, enclosing = traced_config(config, on=on)
        tracing = untraced_run(traced)
        if tracing is not None:
            traced = self._traced(traced, tracing, run_settings(context))
        with _handed_down(enclosing):
            parts = cast(
                "Generator[Any]",
                super().stream(redacted, traced, context=context, control=control, **kwargs),
            )
            try:
                for part in parts:
                    try:
                        yield part
                    except GeneratorExit:
                        # before LangGraph's teardown, which waits for the nodes still running
                        _give_up(control)
                        raise
            finally:
                parts.close()

    async def astream(
        self, input: Any, config: Any = None, *, context: Any = None, **kwargs: Any
    ) -> AsyncIterator[Any]:
        """``CompiledStateGraph.astream`` with ``input`` redacted per the run's profile (off the
        event loop: the first run of a profile reads its settings' files); cancelled or closed
        before its end, it stops the run's nodes at their next model call or wait."""
        if isinstance(context, WorkflowContext):
            on = redaction_on(context)
            input = _redacted_run_input(input, on=on)
        else:
            on = await asyncio.to_thread(redaction_on, context)
            if input is not None and on:
                input = await asyncio.to_thread(_redacted_run_input, input, on=on)
        config, enclosing = traced_config(config, on=on)
        tracing = untraced_run(config)
        if tracing is not None:  # the first run of a profile reads its settings' files
            settings = (
                context.settings
                if isinstance(context, WorkflowContext)
                else await asyncio.to_thread(run_settings, context)
            )
            config = self._traced(config, tracing, settings)
        # an async generator: closed with this one (a consumer's break, a cancellation)
        control = _own_control(kwargs, config)
        watchers = list(_WATCHERS) if control is not None else []  # not an enclosing run's part
        for watcher in watchers:
            config = await watcher.started(config, workflow=self.name, context=context)
        parts = super().astream(input, config, context=context, control=control, **kwargs)
        with _handed_down(enclosing):
            async with aclosing(cast("AsyncGenerator[Any]", parts)):
                try:
                    async for part in parts:
                        yield part
                except (asyncio.CancelledError, GeneratorExit):
                    # the nodes run on threads the cancellation does not reach: they stop at
                    # their next model call or wait (see multiagent._interrupt)
                    _give_up(control)
                    raise
                finally:
                    for watcher in watchers:
                        await watcher.ended()

    def _traced(self, config: Any, tracing: Tracing, settings: Settings) -> Any:
        """``config`` traced by OpenTelemetry as the CLI traces a run (see the module)."""
        return trace_run(config, tracing=tracing, workflow=self.name, settings=settings)

    def bulk_update_state(self, config: Any, supersteps: Sequence[Sequence[StateUpdate]]) -> Any:
        """``CompiledStateGraph.bulk_update_state`` (``update_state``'s way) with the values
        checked against the state schema (:mod:`multiagent.graphs.state_updates`) and redacted
        per the process's profile: a state update is given no ``context``."""
        self._check_updates(supersteps)
        return super().bulk_update_state(config, _redacted_updates(supersteps))

    async def abulk_update_state(
        self, config: Any, supersteps: Sequence[Sequence[StateUpdate]]
    ) -> Any:
        """``CompiledStateGraph.abulk_update_state`` with the values checked and redacted (see
        :meth:`bulk_update_state`; settings are read off the event loop)."""
        self._check_updates(supersteps)
        redacted = await asyncio.to_thread(_redacted_updates, supersteps)
        return await super().abulk_update_state(config, redacted)

    def _check_updates(self, supersteps: Sequence[Sequence[StateUpdate]]) -> None:
        """Raise :class:`~multiagent.graphs.state_updates.StateUpdateError` for the first value
        the state schema does not allow, before anything is written."""
        for step in supersteps:
            for update in step:
                check_state_update(self.builder.state_schema, update.values)


class RunWatcher(Protocol):
    """What a process adds around each ``astream`` (LangGraph Server's way) of a run of its own
    (not part of an enclosing run): LangGraph Server's app watches its runs
    (:mod:`multiagent.graphs.server_app`)."""

    async def started(self, config: Any, *, workflow: str, context: Any) -> Any:
        """The run's ``config``, with what the watcher adds (callbacks)."""
        ...

    async def ended(self) -> None:
        """The run ended, however it ended: given up, once its nodes were told to stop."""
        ...


_WATCHERS: list[RunWatcher] = []


def watch_runs(watcher: RunWatcher) -> None:
    """Have ``watcher`` see each run of its own of this process (idempotent per watcher)."""
    if watcher not in _WATCHERS:
        _WATCHERS.append(watcher)


def _own_control(kwargs: dict[str, Any], config: Any) -> RunControl | None:
    """The ``RunControl`` for a run of this graph: the caller's (``control=``), else a new one;
    ``None`` when the run is part of an enclosing run (called from a node of another graph),
    whose own control LangGraph then hands down: giving up the inner stream (a node's
    ``break``) must not stop the enclosing run."""
    given = kwargs.pop("control", None)
    if given is not None:
        return cast("RunControl", given)
    return None if enclosing_control(config) is not None else RunControl()


def _give_up(control: RunControl | None) -> None:
    """Mark a run as given up by its caller: its nodes stop at their next model call or wait."""
    if control is not None:
        give_up_run(control)


def _redacted_updates(supersteps: Sequence[Sequence[StateUpdate]]) -> list[list[StateUpdate]]:
    on = redaction_on(None)
    return [
        [update._replace(values=redact_input(update.values, enabled=on)) for update in step]
        for step in supersteps
    ]


def redact_run_input(value: Any, context: Any) -> Any:
    """What a run brings in (an input, or a ``Command``'s ``resume`` and ``update``) as it may
    be stored under ``context``'s profile: redacted when it redacts, else ``value`` itself."""
    return _redacted_run_input(value, on=value is not None and redaction_on(context))


def _redacted_run_input(value: Any, *, on: bool) -> Any:
    """:func:`redact_run_input` with the profile's choice made."""
    if value is None or not on:
        return value
    if isinstance(value, Command):
        resume, update = redact_input(value.resume, enabled=True), value.update
        if update is not None:
            update = redact_input(update, enabled=True)
        return replace(value, resume=resume, update=update)
    return redact_input(value, enabled=True)


def traced_config(config: Any, *, on: bool) -> tuple[Any, RunnableConfig | None]:
    """A run's ``config`` whose LangSmith tracer sends placeholders, when the run redacts
    (``on``), and the enclosing run's config as the run must see it.

    A tracer the run is given (the caller's, or an enclosing run's, handed down) is replaced by
    a copy sending to the same project through a redacting client; given none, one is added
    when LangSmith traces, and LangChain then adds no tracer of its own, which would send a
    tool's result as the tool gave it (see :mod:`multiagent.observability.langsmith_redaction`).
    A run started from a step of another run gets that run's config's callbacks too (LangGraph
    merges them in from a context variable): they are returned with the same copies when they
    hold a tracer to replace (see :func:`_handed_down`), else ``None``.
    """
    if not on:
        return config, None
    copies: dict[int, LangChainTracer] = {}
    callbacks = ensure_config(config).get("callbacks")
    if _holds_tracer(callbacks):
        redacting = redacting_callbacks(callbacks, copies=copies)
        # replaced, not merged: merging would keep the given tracer beside its copy
        if redacting is not callbacks:
            config = {**(config or {}), "callbacks": redacting}
    elif (tracer := redacting_tracer()) is not None:
        config = merge_configs(config, {"callbacks": [tracer]})
    enclosing = var_child_runnable_config.get()
    if not enclosing or not _holds_tracer(enclosing.get("callbacks")):
        return config, None
    handed = redacting_callbacks(enclosing.get("callbacks"), copies=copies)
    if handed is enclosing.get("callbacks"):
        return config, None
    return config, {**enclosing, "callbacks": handed}


def _holds_tracer(callbacks: Any) -> bool:
    handlers = (
        [*callbacks.handlers, *callbacks.inheritable_handlers]
        if isinstance(callbacks, BaseCallbackManager)
        else callbacks
    )
    return any(isinstance(handler, LangChainTracer) for handler in handlers or ())


@contextmanager
def _handed_down(enclosing: RunnableConfig | None) -> Iterator[None]:
    """The block sees ``enclosing`` (from :func:`traced_config`) as the enclosing run's config,
    which LangGraph reads from a context variable at the run's start and merges into it (the
    original tracer would trace the run beside its copy)."""
    if enclosing is None:
        yield
        return
    token = var_child_runnable_config.set(enclosing)
    try:
        yield
    finally:
        # a run closed from another context (collected) leaves the variable to that context
        with suppress(ValueError):
            var_child_runnable_config.reset(token)


def run_settings(context: Any) -> Settings:
    """The settings of a run with ``context`` (see :func:`redaction_on`): a
    ``WorkflowContext``'s, else those its profile, policy and provider name (read once per set;
    the process's when the values are bad: the run reports them itself)."""
    if isinstance(context, WorkflowContext):
        return context.settings
    return _settings_for(*_context_key(context))


def _context_key(context: Any) -> tuple[str | None, str | None, str | None]:
    """A plain run context's profile, policy and provider (``None`` each when it is bad)."""
    context = {} if context is None else context
    try:
        spec = context if isinstance(context, RunContext) else RunContext.model_validate(context)
    except Exception:  # the run itself reports a bad context, naming the value
        return None, None, None
    return spec.profile, spec.policy, spec.provider


@functools.lru_cache(maxsize=32)
def _settings_for(profile: str | None, policy: str | None, provider: str | None) -> Settings:
    """Settings for these context values, read once per set."""
    try:
        return load_settings(env=profile, policy=policy, provider=provider)
    except Exception:  # the run reports a bad profile itself; judge by the process's settings
        return load_settings()


def redaction_on(context: Any) -> bool:
    """Whether a run with ``context`` (a ``WorkflowContext``, a ``RunContext``, its plain
    values, or ``None``) redacts personal values."""
    return bool(run_settings(context).profile.features.pii_redaction)
