"""``multiagent worker``: serve a Redis queue (batch chunks and queued runs) on any machine.

Runs until SIGTERM or Ctrl-C: the first lets the running entries finish and be stored, then exits
0; a second one exits at once (130, :func:`_exit_at_once`), leaving the running entries pending
for the other workers. SIGUSR1 prints every thread's stack to stderr and changes nothing (the
standard library's ``faulthandler``): a worker that looks stuck can be looked into as it is.
Queued runs need the shared checkpointer (``MULTIAGENT_CHECKPOINT_URL``); a worker without it
still validates batches.
"""

from __future__ import annotations

import contextlib
import faulthandler
import os
import signal
import sys
from types import FrameType
from typing import Annotated, NoReturn

import typer

from multiagent.commands._shared import cli_settings, err_console, print_json
from multiagent.errors import UsageError
from multiagent.policies import Settings

#: How long a thread of the worker runs before it yields the GIL to one whose reply has come.
GIL_SWITCH_S = 0.001


def worker(
    ctx: typer.Context,
    queue: Annotated[str, typer.Option("--queue", help="The queue to read.")] = "validation",
    concurrency: Annotated[
        int,
        typer.Option(
            "--concurrency",
            help="Model calls in flight at once (1-64); a few more threads prepare the next "
            "calls meanwhile. A queued run takes one thread and runs its agents in parallel.",
        ),
    ] = 4,
    claim_idle: Annotated[
        float,
        typer.Option(
            "--claim-idle",
            help="Seconds (0.5-86400) an entry may sit on a silent worker before another takes "
            "it over.",
        ),
    ] = 60.0,
    max_attempts: Annotated[
        int,
        typer.Option(
            "--max-attempts",
            help="Failed attempts of an entry (provider outage) before it is dead-lettered.",
        ),
    ] = 3,
    idle_exit: Annotated[
        float | None,
        typer.Option("--idle-exit", help="Exit once the queue has been empty this many seconds."),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print what the worker did as one JSON document.")
    ] = False,
    verbose: Annotated[
        bool,
        typer.Option(
            "--verbose",
            help="Print the traceback of an entry that fails unexpectedly, after its one line.",
        ),
    ] = False,
) -> None:
    """Read QUEUE as a consumer group; validate chunks and run queued runs; store once; ack."""
    from multiagent._interrupt import from_signal_handler
    from multiagent.distributed.queue import check_queue_name
    from multiagent.distributed.redis import redis_client, require_redis_url
    from multiagent.distributed.worker import QueueWorker, slot_threads, warm_models
    from multiagent.models.pipeline import ModelPipeline
    from multiagent.nodes.agents_file import load_agents
    from multiagent.nodes.context import build_context
    from multiagent.observability.history import install_history_sink

    check_queue_name(queue)
    if not 1 <= concurrency <= 64:
        raise UsageError(f"--concurrency must be between 1 and 64, got {concurrency}")
    if not 1 <= max_attempts <= 100:
        raise UsageError(f"--max-attempts must be between 1 and 100, got {max_attempts}")
    # above a day, its heartbeat's wait (a third of it) and XAUTOCLAIM's milliseconds overflow
    if not 0.5 <= claim_idle <= 86400:
        raise UsageError(
            f"--claim-idle must be between 0.5 and 86400 seconds (a day), got {claim_idle}"
        )
    if idle_exit is not None and idle_exit <= 0:
        raise UsageError(f"--idle-exit must be more than 0 seconds, got {idle_exit}")
    settings = cli_settings(ctx)
    url = require_redis_url(settings, what="multiagent worker")
    # the worker's calls, tokens and cost reach the metrics history (every 5 minutes and at
    # exit), as a CLI run's do: `metrics show` and the dashboard read them there
    install_history_sink(settings)
    with redis_client(url) as client:
        # every call of this process passes one gate of `concurrency` places
        pipeline = ModelPipeline(settings, max_in_flight=concurrency)
        context = build_context(settings, agents=load_agents(settings), pipeline=pipeline)
        warm_models(context)  # before registering: a registered worker is ready to work
        threads = slot_threads(concurrency, gated=True)
        runner = QueueWorker(
            client, queue=queue, context=context, concurrency=concurrency, claim_idle_s=claim_idle,
            max_attempts=max_attempts, threads=threads, verbose=verbose,
        )  # fmt: skip
        stops = 0
        running = True

        def on_signal(number: int, _frame: FrameType | None) -> None:
            # no exception is raised here: a handler runs wherever the main thread is (a
            # finalizer, a callback), and the slots' threads must learn of the stop first; nor
            # is the stop's lock taken here, which the interrupted main thread may hold
            nonlocal stops
            stops += 1
            if not running:  # the worker has stopped already and is exiting
                return
            if stops > 1:  # asked twice: abandon the running entries; others reclaim them
                err_console.print("worker: stopping now; running entries go back to the queue")
                from_signal_handler(runner.abandon)
                return
            err_console.print("worker: finishing the running entries, then stopping")
            from_signal_handler(runner.stop)

        # the threads mostly wait on sockets: a thread whose reply has come waits for the GIL
        # until the running one yields (5 ms by default, a tenth of a 50 ms call); yield sooner
        sys.setswitchinterval(GIL_SWITCH_S)
        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        if hasattr(signal, "SIGUSR1"):  # POSIX
            faulthandler.register(signal.SIGUSR1, all_threads=True)
        if not as_json:
            shown = f"worker {runner.consumer} on queue {queue} · {concurrency} calls in flight"
            err_console.print(shown, style="dim")
        stats = runner.run(idle_exit_s=idle_exit)
        running = False
        if runner.state.abandoned.is_set():
            _exit_at_once(130, settings)
    if as_json:
        print_json({"consumer": runner.consumer, "queue": queue, **stats.as_dict()})
    else:
        err_console.print(f"worker stopped: {stats.as_dict()}", style="dim")


def _exit_at_once(code: int, settings: Settings) -> NoReturn:
    """End the process now, as a second stop asks, leaving the running entries pending.

    Not through the interpreter's exit: the slots may still be running a queued run's graph,
    whose thread pools that exit would shut down under it (a traceback per thread), and whose
    memories and connections it would close. The completion cache's answers and the metrics'
    counts are written first; budget holds not settled expire with their leases.
    """
    from multiagent.observability.history import persist_process

    persist_process(settings, quiet=True)  # nor may counts that cannot be written keep it up
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)
