"""A run whose steps take one task at a time runs those tasks on the thread that runs the graph.

``max_concurrency=1`` still has LangGraph's sync runner hand every task of a step (each ``Send``
of a validation chunk) to a new thread pool of one thread, and wait for it: per task a future,
a context copy and two thread hand-offs, and per run a thread started and joined. A queue
worker runs thousands of such runs, each in its own slot thread already, so the pool adds
nothing but that cost (about 0.3 ms of CPU per validator call, measured in one process against
the simulator: 2.70 → 2.45 ms per call).

LangGraph takes the function its runner submits tasks with from the run's configuration (the key
it uses itself when a runtime brings its own executor). :func:`one_task_at_a_time` puts one
there that runs each task at once, in a copy of the caller's context as a pool thread would,
and hands back a finished future: the runner then commits, streams and raises exactly as it
does for a pool's futures. LangGraph offers no public switch for this; without the key (another
LangGraph version) the run keeps its pool, which :mod:`tests.unit.test_inline_tasks` notices.
"""

from __future__ import annotations

import concurrent.futures
import weakref
from collections.abc import Callable
from contextvars import copy_context
from typing import Any

from langchain_core.runnables import RunnableConfig

_SUBMIT_KEY: str | None
try:
    from langgraph._internal._constants import CONFIG_KEY_RUNNER_SUBMIT as _SUBMIT_KEY
except ImportError:  # pragma: no cover - a LangGraph without the key: tasks keep the pool
    _SUBMIT_KEY = None


class InlineTasks:
    """Runs each submitted task at once on the submitting thread."""

    def submit(
        self,
        fn: Callable[..., Any],
        *args: Any,
        __name__: str | None = None,  # LangGraph's submit keywords, all four
        __cancel_on_exit__: bool = False,
        __reraise_on_exit__: bool = True,
        __next_tick__: bool = False,
        **kwargs: Any,
    ) -> concurrent.futures.Future[Any]:
        """Run ``fn(*args, **kwargs)`` now; its result or exception in a finished future."""
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        try:
            result = copy_context().run(fn, *args, **kwargs)
        except BaseException as exc:  # as a pool's worker does: the runner re-raises it
            future.set_exception(exc)
        else:
            future.set_result(result)
        return future


def one_task_at_a_time(config: RunnableConfig) -> InlineTasks | None:
    """Make the run of ``config`` run its tasks on the calling thread; the returned object must
    be kept alive for the run (LangGraph holds the submit function weakly)."""
    if _SUBMIT_KEY is None:
        return None
    tasks = InlineTasks()
    configurable = dict(config.get("configurable") or {})
    configurable[_SUBMIT_KEY] = weakref.WeakMethod(tasks.submit)
    config["configurable"] = configurable
    return tasks
