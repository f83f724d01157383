"""``multiagent batch status|results ID``, ``validate --batch FILE --queue NAME``, ``run --queue``.

A distributed batch or a queued run is put on a Redis Stream at once (its id printed);
``multiagent worker`` processes on any machine finish it; ``batch status|results`` follow either
from anywhere with the same ``MULTIAGENT_REDIS_URL`` (a run's id is its thread id). A batch
stopped on its budget resumes under a larger total with ``validate --queue NAME --thread ID
--resume --budget USD`` (:mod:`multiagent.distributed.queue_resume`), and both say so; one whose
items some validators failed on (``incomplete``) is completed by the same ``--resume`` (only those
validators are asked again), as both say too.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer

from multiagent.commands._shared import JsonOption, cli_settings, console, err_console, print_json
from multiagent.errors import UsageError
from multiagent.policies import Settings

batch_app = typer.Typer(
    name="batch",
    help="Follow queued batches and runs: status, results, dead letters.",
    no_args_is_help=True,
)
BatchIdArgument = Annotated[
    str, typer.Argument(help="The batch id or run id printed when it was queued.")
]
#: How often ``--wait`` looks at the batch.
POLL_S = 0.5


def enqueue_command(
    settings: Settings,
    *,
    batch: Path | None,
    queue: str | None,
    wait: bool,
    validators: int | None,
    threshold: float | None,
    agents_file: Path | None,
    as_json: bool,
    budget: float | None = None,
    thread: str | None = None,
    resume: bool = False,
    concurrency: int | None = None,
) -> None:
    """Check everything, then put the batch on the queue; print its id (or follow it).

    ``budget`` is the whole batch's, shared by every worker through Redis; ``thread`` names
    the batch (its id). With ``resume``, batch ``thread`` stopped on its budget is resumed
    under the new total ``budget`` instead
    (:func:`multiagent.commands._batch_resume.resume_queued`). ``--concurrency`` has no
    meaning here (each worker sets its own) and is refused. With ``wait``, the exit code
    is the local batch's for the same results: 1 when items are dead-lettered or the batch
    stopped on its budget, else 3 or 4 when consensus failed or was inconclusive on an item
    (:func:`batch_exit_code`).
    """
    from multiagent.distributed.queue import check_queue_name, enqueue_batch
    from multiagent.distributed.redis import redis_client, require_redis_url
    from multiagent.graphs.batch_file import read_batch_file
    from multiagent.graphs.inputs import validation_input
    from multiagent.nodes.agents_file import load_agents
    from multiagent.safety import check_id_private

    if queue is None:
        raise UsageError("--wait follows a queued batch: add --queue NAME")
    if concurrency is not None:
        raise UsageError(
            "--concurrency cannot be used with --queue: each worker sets its own "
            "(`multiagent worker --concurrency N`)"
        )
    check_queue_name(queue)
    if thread is not None:  # the queue entry, the batch's records and traces hold it as given
        check_id_private(thread, kind="batch id", source="--thread",
                         redacting=settings.profile.features.pii_redaction)  # fmt: skip
    if budget is not None:
        from multiagent.models.ledger import check_budget_value

        if budget < 0:
            raise UsageError(f"--budget must be at least 0 USD, got {budget}")
        check_budget_value(budget, source="--budget")
    if resume:
        given = {"--batch": batch, "--validators": validators, "--threshold": threshold,
                 "--agents-file": agents_file}  # fmt: skip
        for option, value in given.items():
            if value is not None:
                raise UsageError(
                    f"{option} cannot be used with --resume: a resumed batch keeps its items "
                    f"and validators; leave {option} out"
                )
        from multiagent.commands._batch_resume import resume_queued

        resume_queued(settings, queue=queue, thread=thread, budget=budget, wait=wait,
                      as_json=as_json)  # fmt: skip
        return
    if batch is None:
        raise UsageError("--queue takes a batch: add --batch FILE.jsonl")
    url = require_redis_url(settings, what="--queue")
    agents = load_agents(settings, agents_file=agents_file)
    inputs = validation_input(
        read_batch_file(batch), settings=settings, agents=agents, validators=validators,
        threshold=threshold,
    )  # fmt: skip
    if budget is not None:
        from multiagent.models.pipeline import ModelPipeline

        calls = [("validate", agents[name].tier) for name in inputs["validators"]]
        ModelPipeline(settings, calls=calls).check_budget(budget, source="--budget")
    with redis_client(url) as client:  # unreachable: one line, exit 2, nothing enqueued
        queued = enqueue_batch(
            client, queue=queue, items=list(inputs["items"]), validators=inputs["validators"],
            threshold=inputs["threshold"], budget_usd=budget, batch_id=thread,
        )  # fmt: skip
        summary = {"batch_id": queued.batch_id, "queue": queued.queue, "items": queued.items,
                   "chunks": queued.chunks}  # fmt: skip
        print_or_follow(
            client, queued.batch_id, wait=wait, as_json=as_json, summary=summary,
            queued=f"{queued.items} items on queue {queue}",
            following=f"batch {queued.batch_id} on queue {queue}",
        )  # fmt: skip


def print_or_follow(
    client: Any,
    batch_id: str,
    *,
    wait: bool,
    as_json: bool,
    summary: dict[str, Any],
    queued: str,
    following: str,
) -> None:
    """What a batch just queued (or queued again) prints: its id and how to follow it
    (``summary`` with ``--json``); with ``wait``, it is followed to its end (``following``
    said first) and the process exits with its code (:func:`batch_exit_code`)."""
    if not wait:
        if as_json:
            print_json(summary)
        else:
            console.print(batch_id, highlight=False)
            err_console.print(f"{queued}; follow: multiagent batch status {batch_id}", style="dim")
        return
    err_console.print(following, style="dim")
    follow_batch(client, batch_id, show=not as_json)
    document = show_batch_results(client, batch_id, as_json=as_json)
    raise typer.Exit(code=batch_exit_code(document))


def batch_exit_code(document: dict[str, Any]) -> int:
    """The exit code of a queued batch's results, as the same local batch's would be: 1 when
    it did not complete (dead-lettered items, its budget), else 3 or 4 when consensus failed
    or was inconclusive on an item, else 0."""
    from multiagent.commands._exit_codes import exit_code

    if document["state"] != "completed":
        return 1
    return exit_code("completed", document["results"])


def follow_batch(client: Any, batch_id: str, *, show: bool) -> None:
    """Poll the batch until every item is finished, with a progress bar on stderr."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from multiagent.distributed.queue import batch_status
    from multiagent.distributed.queue_resume import running_entries

    bar = Progress(
        "[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), console=err_console, transient=True, disable=not show,
    )  # fmt: skip
    with bar:
        task = bar.add_task("validating", total=None)
        while True:
            status = batch_status(client, batch_id)
            bar.update(task, completed=status["finished"], total=status["items"])
            # completed, or stopped on its budget once the entries workers took have ended (its
            # results are then final, and the resume printed is accepted at once)
            state = status["state"]
            if state != "running" and not (
                state == "budget_exceeded" and running_entries(client, batch_id)
            ):
                return
            time.sleep(POLL_S)


def show_batch_results(client: Any, batch_id: str, *, as_json: bool) -> dict[str, Any]:
    """Print the batch's results (a table, or one JSON document); return them."""
    from multiagent.commands._render import _analysis_hits as analysis_hits
    from multiagent.commands._render import _results_table as results_table
    from multiagent.distributed.queue import batch_results

    document = batch_results(client, batch_id)
    if as_json:
        print_json(document)
        return document
    if document["results"]:
        console.print(results_table(document["results"]))
    usage = document["usage"]
    console.print(
        f"[dim]batch {batch_id} · {document['finished']}/{document['items']} items · "
        f"{usage['calls']} calls · ${usage['cost_usd']:.6f} · {usage['cache_hits']} cache hits"
        f"{analysis_hits(usage)}[/]",
        highlight=False,
    )
    if document["dead_lettered"]:
        console.print(f"[red]{len(document['dead_lettered'])} items dead-lettered[/]")
    waiting = len(document["unfinished"]) - len(document["dead_lettered"])
    if waiting:
        partial = len(set(document["partial"]) - set(document["dead_lettered"]))
        kept = f" ({partial} with the verdicts given kept)" if partial else ""
        console.print(f"[yellow]{waiting} items not finished yet{kept}[/]")
    from multiagent.commands._batch_resume import print_hint, resume_hint

    print_hint(resume_hint(client, document), as_json=as_json)
    return document


def _show_run(client: Any, run_id: str, *, as_json: bool) -> None:
    from multiagent.distributed.runs import run_results

    document = run_results(client, run_id)
    if as_json:
        print_json(document)
        return
    if document.get("output"):
        console.print(str(document["output"]), markup=False, highlight=False)
    usage = document.get("usage") or {}
    console.print(
        f"[dim]run {run_id} · {document['state']} · {usage.get('calls', 0)} calls · "
        f"${float(usage.get('cost_usd', 0.0)):.6f}[/]",
        highlight=False,
    )


@batch_app.command("status")
def status(ctx: typer.Context, batch_id: BatchIdArgument, as_json: JsonOption = False) -> None:
    """How far a queued batch is: items finished, chunk runs, the queue's backlog."""
    from multiagent.commands._batch_resume import print_hint, resume_hint
    from multiagent.distributed.queue import batch_status
    from multiagent.distributed.queue_resume import incomplete_ids
    from multiagent.distributed.redis import redis_client, require_redis_url
    from multiagent.distributed.runs import is_run, run_status

    url = require_redis_url(cli_settings(ctx), what="multiagent batch")
    with redis_client(url) as client:
        if is_run(client, batch_id):
            document = run_status(client, batch_id)
        else:
            document = batch_status(client, batch_id)
            # decided without validators that failed: a resume asks only those again
            document["incomplete_count"] = len(incomplete_ids(client, batch_id))
        hint = resume_hint(client, document)
    if as_json:
        print_json(document)
        print_hint(hint, as_json=True)
        return
    if document["kind"] == "run":
        console.print(
            f"run {batch_id} · {document['workflow']} · {document['state']} · "
            f"{document['failures']} failed attempts · queue {document['queue']}",
            highlight=False,
        )
    else:
        count = document["incomplete_count"]
        incomplete = f" ({count} incomplete)" if count else ""
        console.print(
            f"batch {batch_id} · {document['state']} · {document['finished']}/"
            f"{document['items']} items{incomplete} · queue {document['queue']} "
            f"({document['queue_pending']} pending, {document['dead_letters']} dead letters)",
            highlight=False,
        )
    if document["last_error"]:
        console.print(f"last error: {document['last_error']}", highlight=False)
    print_hint(hint, as_json=False)


@batch_app.command("results")
def results(ctx: typer.Context, batch_id: BatchIdArgument, as_json: JsonOption = False) -> None:
    """The finished items' consensus in input order, and which items are not finished yet."""
    from multiagent.distributed.redis import redis_client, require_redis_url
    from multiagent.distributed.runs import is_run

    url = require_redis_url(cli_settings(ctx), what="multiagent batch")
    with redis_client(url) as client:
        if is_run(client, batch_id):
            _show_run(client, batch_id, as_json=as_json)
        else:
            show_batch_results(client, batch_id, as_json=as_json)


def enqueue_run_command(
    settings: Settings,
    *,
    queue: str,
    task: str | None,
    team: list[str] | None,
    thread: str | None,
    resume: bool,
    agents_file: Path | None,
    wait: bool,
    as_json: bool,
) -> None:
    """Check everything, then put an orchestration run on the queue; print its id (or follow).

    Exit 0 once queued (with ``--wait``: once it completed), 1 when it ended on its budget or
    was dead-lettered, 2 on bad input (nothing queued).
    """
    from multiagent.distributed.queue import check_queue_name
    from multiagent.distributed.redis import redis_client, require_redis_url
    from multiagent.distributed.runs import enqueue_run, require_checkpoint_url
    from multiagent.graphs.inputs import orchestration_input
    from multiagent.graphs.resuming import check_thread
    from multiagent.nodes.agents_file import load_agents
    from multiagent.persistence.checkpointer import open_checkpointer
    from multiagent.safety import check_id_private, redact_input

    check_queue_name(queue)
    if resume and not thread:
        raise UsageError("--resume needs --thread ID (the run id printed when it was queued)")
    if thread is not None:  # the queue entry, the checkpoints and traces hold it as given
        check_id_private(thread, kind="thread id", source="--thread",
                         redacting=settings.profile.features.pii_redaction)  # fmt: skip
    url = require_redis_url(settings, what="--queue")
    require_checkpoint_url(settings)
    agents = load_agents(settings, agents_file=agents_file)
    inputs = None
    if not (resume and task is None):
        inputs = dict(orchestration_input(task, agents=agents, team=team))
        # redacted before it reaches the queue entry in Redis
        inputs = redact_input(inputs, enabled=settings.profile.features.pii_redaction)
    if thread is not None:
        with open_checkpointer(settings) as saver:  # unknown or taken thread: one line, exit 2
            check_thread("orchestration", checkpointer=saver, thread_id=thread, resume=resume)
    with redis_client(url) as client:
        queued = enqueue_run(
            client, queue=queue, workflow="orchestration", inputs=None if resume else inputs,
            thread_id=thread,
        )  # fmt: skip
        if not wait:
            if as_json:
                print_json({"run_id": queued.run_id, "thread_id": queued.run_id, "queue": queue})
            else:
                console.print(queued.run_id, highlight=False)
                err_console.print(
                    f"run queued on {queue}; follow: multiagent batch status {queued.run_id}",
                    style="dim",
                )
            return
        err_console.print(f"run {queued.run_id} on queue {queue}", style="dim")
        state = _follow_run(client, queued.run_id)
        _show_run(client, queued.run_id, as_json=as_json)
    raise typer.Exit(code=0 if state in ("completed", "rejected", "awaiting_approval") else 1)


def _follow_run(client: Any, run_id: str) -> str:
    """Poll a queued run until it has ended (stored or dead-lettered); return its state."""
    from multiagent.distributed.runs import FINAL, run_status

    while True:
        state = str(run_status(client, run_id)["state"])
        if state in FINAL or state == "dead_letter":
            return state
        time.sleep(POLL_S)
