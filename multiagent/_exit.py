"""Leave the process as the interpreter would, without its final teardown.

When a command is done, the interpreter still frees every module and object it holds before
the process ends: for a run (LangChain, LangGraph, Chroma's Rust client, numpy, the embedder)
about 0.25 s of a 2-core machine, a seventh of a simulated run's wall time, spent on memory
the operating system takes back at once. :func:`exit_now` does what the interpreter's exit
does that anyone can observe, in its order: it waits for non-daemon threads and runs
``threading``'s exit hooks (thread pools drain, LangSmith's tracing queue flushes), runs the
``atexit`` handlers (OpenTelemetry's exporters, the completion cache's write-behind, budget
holds, the live metrics writer) and flushes stdout and stderr; then it ends the process with
``os._exit``, skipping the teardown alone. Nothing of ours is written in a finalizer: every
store is closed by its context manager or an ``atexit`` handler, and every write that must
not tear is atomic. CPython offers no public call for the first two steps; both are the ones
``Py_FinalizeEx`` makes.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import sys
import threading
from typing import NoReturn


def exit_code_of(exc: SystemExit) -> int:
    """The status ``exc`` asks for, as the interpreter reads it (a message is printed, 1)."""
    code = exc.code
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def exit_now(code: int) -> NoReturn:
    """End the process with ``code`` after the interpreter's observable exit steps."""
    threading._shutdown()  # type: ignore[attr-defined]  # join threads, run their exit hooks
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        # a closed pipe (`| head`) or stream: nothing left to keep
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)
