"""``multiagent validate --batch FILE``: a local batch in chunks, kept resumable on disk.

The batch lives in ``MULTIAGENT_HOME/batches.sqlite`` under its id (``--thread``, or a new one,
printed): each finished chunk is stored before it counts, so ``--resume`` runs exactly the items
that did not finish, and asks again only the validators that failed on the items decided
without them (``incomplete``, named with the command that completes them). Exit 0 when every
item finished and passed, 1 when the batch stopped (provider failure or budget) with the
unfinished items named, 2 on bad input, 3 or 4 when consensus failed on an item or an item is
inconclusive (see :func:`multiagent.commands._exit_codes.exit_code`), 130
when Ctrl-C stopped it (the chunks that ended are stored and the resume command is printed).
A batch id is never a thread id of the checkpointer, and the other way round.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from multiagent.commands._exit_codes import exit_code
from multiagent.commands._shared import console, err_console, print_json
from multiagent.errors import UsageError
from multiagent.policies import Settings

if TYPE_CHECKING:
    from multiagent.nodes.agents_file import AgentCatalog


def is_local_batch(settings: Settings, thread: str | None) -> bool:
    """Whether ``thread`` names a batch of the local batch store."""
    from multiagent.graphs.batch_store import batch_store_path, open_batch_store

    if not thread or not batch_store_path(settings).exists():
        return False
    with open_batch_store(settings, create=False) as store:
        return store.manifest(thread) is not None


def refuse_batch_id(settings: Settings, thread: str | None) -> None:
    """A new thread of the checkpointer may not take a local batch's id (``--resume`` could
    not tell them apart)."""
    if is_local_batch(settings, thread):
        raise UsageError(
            f"id {thread!r} is already a batch's (`multiagent validate --thread {thread} "
            "--resume` continues it); choose another --thread"
        )


def batch_lock_path(settings: Settings, batch_id: str) -> Path:
    """The file whose ``flock`` the process running batch ``batch_id`` holds."""
    return settings.home / "batch-locks" / f"{batch_id}.lock"


def _hold_batch(settings: Settings, batch_id: str) -> int:
    """Take batch ``batch_id``'s lock for this process (it dies with the process), or refuse:
    a second process resuming it beside the first would validate its unfinished items twice,
    and pay for them twice."""
    path = batch_lock_path(settings, batch_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise UsageError(
            f"batch {batch_id!r} is running in another process; wait for it to end, or stop it "
            "and then resume"
        ) from None
    return fd


def _refuse_thread_id(settings: Settings, thread: str) -> None:
    """A new batch may not take the id of a thread of the checkpointer."""
    from multiagent.persistence.checkpointer import checkpoint_path, open_checkpointer

    if not settings.checkpoint_url and not checkpoint_path(settings).exists():
        return  # no threads yet: nothing to open (or create)
    with open_checkpointer(settings) as saver:
        found = saver.get_tuple({"configurable": {"thread_id": thread}})
    if found is not None:
        owner = (found.metadata or {}).get("workflow") or "workflow"
        raise UsageError(
            f"id {thread!r} is already a {owner} thread (see `multiagent threads list`); "
            "choose another --thread for the batch"
        )


def run_local_batch(
    settings: Settings,
    *,
    batch: Path | None,
    validators: int | None,
    threshold: float | None,
    concurrency: int | None,
    thread: str | None,
    resume: bool,
    budget: float | None,
    agents_file: Path | None,
    no_stream: bool,
    as_json: bool,
) -> None:
    """Run (or resume) a local batch, print its outcome, exit with its code."""
    from multiagent._interrupt import stop_on_ctrl_c
    from multiagent.commands._render import print_outcome, resume_command
    from multiagent.graphs.batch import batch_cross_validate
    from multiagent.graphs.batch_file import read_batch_file
    from multiagent.graphs.batch_store import open_batch_store
    from multiagent.graphs.report import outcome_report
    from multiagent.nodes.agents_file import load_agents
    from multiagent.nodes.context import build_context
    from multiagent.observability.history import persist_process
    from multiagent.observability.tracing import configure_tracing, shutdown_tracing

    if resume and not thread:
        raise UsageError("--resume needs --thread ID (the batch id printed when it started)")
    if budget is not None and budget < 0:
        raise UsageError(f"--budget must be at least 0 USD, got {budget}")
    items: list[Any] | None = read_batch_file(batch) if batch is not None else None
    if thread and not resume:
        _refuse_thread_id(settings, thread)
    agents = load_agents(settings, agents_file=agents_file)
    if budget is not None and not resume:
        _refuse_budget_no_call_fits(settings, agents, budget, validators=validators)
    if not resume and not thread:  # named here, so that its lock is held from the start
        from multiagent.graphs.workflows import new_thread_id

        thread = new_thread_id("validation")
    # a new batch holds its lock too: a resume of it started beside it would run its items again
    held = (
        _hold_batch(settings, str(thread))
        if not resume or is_local_batch(settings, thread)
        else None
    )
    configure_tracing(settings)
    # a transient bar drawn where no terminal erases it leaves an empty line (before an error)
    terminal = err_console.is_terminal
    progress = None if as_json or no_stream or not terminal else _ProgressBar()
    try:
        # Ctrl-C: no new chunk or call starts, never an interrupt inside the thread pools
        with stop_on_ctrl_c(sigterm=True), open_batch_store(settings) as store:
            if resume and items is not None:
                _check_same_items(store.manifest(str(thread)), items)
            context = build_context(settings, agents=agents, budget_usd=budget)
            outcome = batch_cross_validate(
                None if resume else items, settings=settings, validators=validators,
                threshold=threshold, max_concurrency=concurrency, context=context, store=store,
                thread_id=thread, resume=resume, on_progress=progress,
            )  # fmt: skip
    finally:
        if progress is not None:
            progress.close()
        if held is not None:
            os.close(held)  # closing the descriptor releases the lock
        shutdown_tracing()
        persist_process(settings)
    unfinished, incomplete = outcome.unfinished, outcome.incomplete
    report = {
        **outcome_report(outcome.outcome),
        "unfinished": unfinished,
        "unfinished_count": len(unfinished),
        "incomplete": incomplete,
        "incomplete_count": len(incomplete),
    }
    if as_json:
        print_json(report)
    else:
        print_outcome(console, outcome.outcome, report, streamed=set())
    if as_json and outcome.status == "interrupted":  # stdout holds the one document
        command = resume_command(outcome.outcome)
        err_console.print(f"interrupted; resume: {command}", highlight=False, soft_wrap=True)
    elif as_json and outcome.status == "budget_exceeded" and not outcome.outcome.daily_cap:
        command = resume_command(outcome.outcome)
        err_console.print(
            f"stopped on its budget; resume with a larger budget: {command} --budget USD",
            highlight=False,
            soft_wrap=True,
        )
    raise typer.Exit(code=exit_code(outcome.status, report["results"]))


def _refuse_budget_no_call_fits(
    settings: Settings, agents: AgentCatalog, budget: float, *, validators: int | None
) -> None:
    """A budget that no validator call fits is refused before the batch is stored, as for one
    text and for a queued batch."""
    from multiagent.graphs.inputs import choose_validators
    from multiagent.models.ledger import check_budget_value
    from multiagent.models.pipeline import ModelPipeline

    check_budget_value(budget, source="--budget")
    names = choose_validators(settings, agents, count=validators)
    calls = [("validate", agents[name].tier) for name in names]
    ModelPipeline(settings, calls=calls).check_budget(budget, source="--budget")


def _check_same_items(manifest: Any, items: list[Any]) -> None:
    """A resume given the file again must be given the same items."""
    if manifest is None:
        return  # the unknown batch is reported by the run itself
    stored = [(i["id"], i["text"]) for i in manifest.items]
    if stored != [(i["id"], i["text"]) for i in items]:
        raise UsageError(
            f"the items of --batch differ from those of batch {manifest.batch_id!r}; "
            "leave --batch out to resume"
        )


class _ProgressBar:
    """A rich progress bar of finished items, on stderr."""

    def __init__(self) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

        self._bar = Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=err_console,
            transient=True,
        )
        self._task = self._bar.add_task("validating", total=None)
        self._bar.start()

    def __call__(self, done: int, total: int) -> None:
        self._bar.update(self._task, completed=done, total=total)

    def close(self) -> None:
        self._bar.stop()
