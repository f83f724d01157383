"""``multiagent worker`` whose own stop takes a SIGTERM while holding the stop event's lock.

Run as ``python tests/distributed/signal_worker.py worker --queue Q --idle-exit S ...``: the real
worker command, except that when its main thread sets the stop itself (the queue stayed empty,
the worker ends), it sends itself a SIGTERM from inside that ``Event.set``, the event's lock held:
the one place of a run where the main thread holds a lock the worker's signal handler takes.
"""

from __future__ import annotations

import os
import signal
import sys
import threading

from multiagent.distributed.worker import QueueWorker
from multiagent.distributed.worker_state import WorkerStats


class _SignalledInsideSet(threading.Event):
    """An event whose first ``set`` on the main thread is interrupted by a SIGTERM."""

    fired = False

    def set(self) -> None:
        if threading.current_thread() is threading.main_thread() and not self.fired:
            self.fired = True
            with self._cond:  # type: ignore[attr-defined]  # the lock ``Event.set`` takes
                os.kill(os.getpid(), signal.SIGTERM)  # the handler runs as the call returns
        super().set()


_run = QueueWorker.run


def _run_signalled(self: QueueWorker, *, idle_exit_s: float | None = None) -> WorkerStats:
    self.state.stop = _SignalledInsideSet()  # before any thread reads it
    return _run(self, idle_exit_s=idle_exit_s)


QueueWorker.run = _run_signalled  # type: ignore[method-assign]

if __name__ == "__main__":
    from multiagent.cli import main

    sys.argv[0] = "multiagent"
    main()
