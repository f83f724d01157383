"""Ctrl-C as a request to stop at the next model call, not an exception raised anywhere.

Python raises ``KeyboardInterrupt`` in the main thread wherever that thread is, and the main
thread of a run sits in LangGraph's task runner (``concurrent.futures``). Landing between a
future's lock being taken and given back, the interrupt leaves the lock held; the pool thread
that next takes it blocks for good, and the run waits for that thread for good (a CLI run hung
after Ctrl-C this way, seen under the test suite). So a command that runs graphs holds
:func:`stop_on_ctrl_c`: the first Ctrl-C only sets a flag (a plain assignment: a signal handler
must take no lock the interrupted code may hold). Each model call checks the flag before it
starts (:func:`check_stop`), and the simulated provider's waits check it as they wait
(:func:`wait_or_stop`); the task that meets it raises :class:`StopRequested` (a
``KeyboardInterrupt``) in its own thread, and LangGraph ends the step as for any failed task, so
the run stops as ``interrupted`` with its finished steps kept. A call already at a real provider
ends first (its cost is kept). Nothing else shows that the run is stopping, so the block's
``on_stop`` says it at once, on a thread of its own (:func:`from_signal_handler`): a user who
sees nothing happen presses again.

A second Ctrl-C raises at once, as Python would, in the main thread, and marks the stop as
immediate: the answers still coming in on other threads would go on otherwise, and the run's
end with them (LangGraph waits for its tasks), so every stream checks :func:`check_stop_now`
between its tokens and stops there. The in-process ``local`` model's generation has no other
way out: on another thread nothing reaches it, and on the main thread the interrupt may land
in llama.cpp's C callback, which drops it. A stream still waiting for its first token has no
token to check between: what blocks it is a socket read, which the actions registered with
:func:`at_stop_now` cut (:mod:`multiagent.models._cut_on_stop`).

A notebook's kernel interrupt is the same signal landing in the same place, so the block is public
(``multiagent.stop_on_ctrl_c``): around ``graph.invoke``/``stream`` in a cell, an interrupt stops
the graph with :class:`StopRequested`, its finished steps in the checkpointer.

The same stop reaches the threads of one run when its caller gives the run up: an ``astream``
(LangGraph Server's way, ``ainvoke`` too) whose task is cancelled, a ``stream`` closed before its
end (a notebook's ``break``). LangGraph runs the workflows' nodes, which are synchronous, on
worker threads that a cancellation does not reach, so a node kept calling the model (and
paying) after its run was gone, and a closed ``stream`` waited for it. The workflows' graphs
(:mod:`multiagent.graphs.redacting`) then mark the run's own
:class:`~langgraph.runtime.RunControl` with :data:`RUN_CANCELLED` (:func:`give_up_run`);
:func:`check_stop` reads it from the run's config in the node's thread and raises
:class:`RunCancelled` there, and a call of the run waiting for its first token has its socket
cut, as at the second Ctrl-C (:func:`at_run_given_up`). Other runs of the process go on.

LangGraph's synchronous ``stream`` has no cancellation of its own and the standard library none
for threads, so this is written here.
"""

from __future__ import annotations

import _thread
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

from langchain_core.runnables import RunnableConfig
from langchain_core.runnables.config import var_child_runnable_config

#: How often a simulated wait looks at the flag.
_POLL_S = 0.05

#: The drain reason of a run's ``RunControl`` once its caller gave the run up (LangGraph's own
#: reasons, a server's ``shutdown`` among them, let the running step finish).
RUN_CANCELLED = "multiagent: run cancelled by its caller"
#: Where LangGraph keeps a run's ``Runtime`` in the config its nodes run with.
_RUNTIME_KEY = "__pregel_runtime"

_requested = False
_now = False
#: Held while ``on_stop`` says the run is stopping (see :func:`wait_for_stop_notice`).
_notice = _thread.allocate_lock()
_terminated = False  # the stop was asked by SIGTERM (see ``stop_on_ctrl_c(sigterm=True)``)
#: Run by the signal handler at the second Ctrl-C (see :func:`at_stop_now`).
_at_stop_now: list[Callable[[], None]] = []
#: Run with a run's ``RunControl`` when its caller gives it up (see :func:`at_run_given_up`).
_at_given_up: list[Callable[[Any], None]] = []


class StopRequested(KeyboardInterrupt):
    """Ctrl-C, raised at the start of a model call (or in a simulated wait) once asked for."""


class RunCancelled(StopRequested):
    """The run this thread works for was given up by its caller (see the module)."""


def stop_requested() -> bool:
    """Whether Ctrl-C asked the running command to stop."""
    return _requested


def terminated() -> bool:
    """Whether SIGTERM, not Ctrl-C, asked the command to stop (the command then exits 143)."""
    return _terminated


def stopping_now() -> bool:
    """Whether Ctrl-C was pressed twice: answers in flight are to stop too."""
    return _now


def at_stop_now(action: Callable[[], None]) -> None:
    """Run ``action`` at the second Ctrl-C, in the signal handler itself.

    For what a flag cannot reach, a thread blocked in a system call: ``action`` runs on the
    main thread between two of its bytecodes, so it takes no lock and does not block (a
    ``socket.shutdown`` is the kind of thing it does). Registered once per process, by the
    module that needs it (this one imports nothing of the project's above it).
    """
    _at_stop_now.append(action)


def at_run_given_up(action: Callable[[Any], None]) -> None:
    """Run ``action(control)`` when the run of ``control`` is given up by its caller
    (:func:`give_up_run`), on the thread that gives it up: for a thread of the run blocked
    where no flag reaches it, as :func:`at_stop_now` is for the second Ctrl-C."""
    _at_given_up.append(action)


def give_up_run(control: Any) -> None:
    """Mark the run of ``control`` (its ``RunControl``) as given up by its caller: its threads
    stop at their next model call, wait or token, and the actions of :func:`at_run_given_up`
    cut what blocks them."""
    control.request_drain(RUN_CANCELLED)
    for action in _at_given_up:
        action(control)


def check_stop() -> None:
    """Raise :class:`StopRequested` when Ctrl-C asked to stop, :class:`RunCancelled` when the
    run of the calling thread was given up."""
    if _requested:
        raise StopRequested
    if run_cancelled():
        raise RunCancelled


def check_stop_now() -> None:
    """Raise :class:`StopRequested` once Ctrl-C was pressed twice, :class:`RunCancelled` when
    the run of the calling thread was given up: the check between two tokens of an answer,
    which the first Ctrl-C lets finish."""
    if _now:
        raise StopRequested
    if run_cancelled():
        raise RunCancelled


def run_cancelled() -> bool:
    """Whether the LangGraph run the calling thread works for was given up by its caller."""
    return getattr(current_control(), "drain_reason", None) == RUN_CANCELLED


def current_control() -> Any:
    """The ``RunControl`` of the LangGraph run the calling thread works for, or ``None``."""
    return _control_in(var_child_runnable_config.get())


def enclosing_control(config: RunnableConfig | None) -> Any:
    """The ``RunControl`` of the run a run started with ``config`` belongs to (a graph called
    from a node of another is part of that run), or ``None``."""
    # what ``ensure_config`` would merge, without building the merged config: the caller's
    # config, else the enclosing run's (the calling thread's)
    return _control_in(config) or _control_in(var_child_runnable_config.get())


def _control_in(config: RunnableConfig | None) -> Any:
    runtime = (config or {}).get("configurable", {}).get(_RUNTIME_KEY)
    return getattr(runtime, "control", None)


def wait_or_stop(seconds: float) -> None:
    """Sleep ``seconds``, raising :class:`StopRequested` as soon as Ctrl-C asks to stop."""
    end = time.monotonic() + seconds
    while True:
        check_stop()
        left = end - time.monotonic()
        if left <= 0:
            return
        time.sleep(min(left, _POLL_S))


def from_signal_handler(action: Callable[[], object]) -> None:
    """Run ``action`` (a stop that sets a ``threading.Event``) on a thread of its own.

    A signal handler runs on the main thread between two of its bytecodes, possibly while that
    thread holds the very lock ``action`` takes (an event's, inside its own ``wait`` or
    ``set``): taken there, the lock waits for the thread that waits for it. Its own thread
    waits until the interrupted code lets the lock go. ``_thread`` starts it without taking
    ``threading``'s registry lock, which the main thread may hold too.
    """
    _thread.start_new_thread(action, ())


def wait_for_stop_notice(timeout_s: float = 10.0) -> None:
    """Wait until the ``on_stop`` of :func:`stop_on_ctrl_c` has said its line, if it runs.

    The line goes out on a thread of its own, which a run stopping at once would otherwise
    outpace (its closing report printed first) or outlive (the process gone before the line).
    """
    if _notice.acquire(timeout=timeout_s):
        _notice.release()


def _give_notice(on_stop: Callable[[], object]) -> None:
    """Run ``on_stop``, then let :func:`wait_for_stop_notice` go."""
    try:
        on_stop()
    finally:
        _notice.release()


@contextmanager
def stop_on_ctrl_c(
    *, on_stop: Callable[[], object] | None = None, sigterm: bool = False
) -> Iterator[None]:
    """Within the block (main thread only), the first Ctrl-C asks to stop, the second raises.

    Elsewhere than the main thread signals cannot be handled, and the block changes nothing.

    Args:
        on_stop: Called once, at the first Ctrl-C, to say that the command is stopping; on a
            thread of its own (it may take locks the interrupted main thread holds, and print).
        sigterm: SIGTERM does what Ctrl-C does (:func:`terminated` then says so). The CLI's
            runs ask for it: killed by SIGTERM's default action, a run ended without its exit
            steps, its spans and LangSmith runs never sent (or left open) and its metrics
            not persisted. Not for a notebook, whose kernel a SIGTERM must end.
    """
    global _requested, _now, _terminated
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_signal(number: int, _frame: FrameType | None) -> None:
        global _requested, _now, _terminated
        if _requested:  # asked twice: stop now, the answers still coming in too
            _now = True
            for action in _at_stop_now:
                action()
            raise KeyboardInterrupt
        _requested, _terminated = True, number == signal.SIGTERM
        # taken without waiting (a wait here could be for the interrupted code)
        if on_stop is not None and _notice.acquire(blocking=False):
            from_signal_handler(lambda: _give_notice(on_stop))

    previous = signal.signal(signal.SIGINT, on_signal)
    before_term = signal.signal(signal.SIGTERM, on_signal) if sigterm else None
    _terminated = False
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if before_term is not None:
            signal.signal(signal.SIGTERM, before_term)
        wait_for_stop_notice()
        _requested = _now = False
