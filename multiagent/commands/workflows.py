"""``multiagent run | meeting | validate``: the three workflows, streamed, checkpointed, resumable.

Each command turns its arguments into its workflow's input and hands it to
:func:`~multiagent.commands._workflow_run.run_in_terminal`, which runs it as a thread of the
checkpointer (``--resume`` continues one); :mod:`multiagent.commands._workflow_run` says how a
run is shown and what ``--reveal-pii`` does, :mod:`multiagent.commands._exit_codes` how the
process exits. ``run --queue`` and ``validate --queue`` put the work on a Redis queue for
``multiagent worker`` instead, and ``validate --batch`` runs a local batch
(:mod:`multiagent.commands._batch_run`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from multiagent.commands._shared import JsonOption, cli_settings
from multiagent.commands._workflow_options import (
    AgentsFileOption,
    BudgetOption,
    MemoryOption,
    ModelOption,
    NoStreamOption,
    QuietAgentsOption,
    ResumeOption,
    RevealOption,
    ThreadOption,
    no_model_option,
    no_reveal_option,
    refuse_on_resume,
)
from multiagent.commands._workflow_run import Protect, run_in_terminal
from multiagent.errors import UsageError
from multiagent.policies import Settings

if TYPE_CHECKING:  # imported where used, so `--help` stays fast
    from multiagent.nodes.agents_file import AgentCatalog


def run(
    ctx: typer.Context,
    task: Annotated[
        str | None,
        typer.Argument(
            help="The task (may be left out with --resume); - reads it from standard input, "
            "@FILE from a file."
        ),
    ] = None,
    agents: Annotated[
        str | None,
        typer.Option(
            "--agents", help="Comma-separated team, each gets a part (default: the planner picks)."
        ),
    ] = None,
    approve: Annotated[
        bool, typer.Option("--approve", help="Wait for a human to approve the plan.")
    ] = False,
    thread: ThreadOption = None,
    resume: ResumeOption = False,
    budget: BudgetOption = None,
    agents_file: AgentsFileOption = None,
    memory: MemoryOption = "auto",
    queue: Annotated[
        str | None,
        typer.Option(
            "--queue",
            help="Put the run on this Redis queue for `multiagent worker` (its thread in "
            "MULTIAGENT_CHECKPOINT_URL); prints the run id.",
        ),
    ] = None,
    wait: Annotated[
        bool, typer.Option("--wait", help="With --queue: wait for the run and print it.")
    ] = False,
    no_stream: NoStreamOption = False,
    quiet_agents: QuietAgentsOption = False,
    as_json: JsonOption = False,
    model: ModelOption = None,
    reveal_pii: RevealOption = False,
) -> None:
    """Orchestrate a team: a planner splits TASK, agents work in parallel, a synthesizer streams."""
    from multiagent.graphs.inputs import orchestration_input
    from multiagent.nodes.agents_file import split_names

    if queue is not None or wait:  # a queued run: any worker runs (or resumes) it
        no_model_option(model, "--queue")
        no_reveal_option(reveal_pii, "--queue")
        _queue_run(
            ctx, queue=queue, task=task, agents=agents, approve=approve, thread=thread,
            resume=resume, budget=budget, agents_file=agents_file, wait=wait, as_json=as_json,
        )  # fmt: skip
        return
    refuse_on_resume(ctx, resume, "agents", "approve")

    def make_inputs(settings: Settings, catalog: AgentCatalog, protect: Protect) -> Any:
        if resume and task is None:
            return None
        return protect(
            orchestration_input(
                task, agents=catalog, team=split_names(agents), require_approval=approve
            )
        )

    run_in_terminal(
        ctx, "orchestration", make_inputs, thread=thread, resume=resume, budget=budget,
        agents_file=agents_file, no_stream=no_stream, as_json=as_json, memory=memory,
        model=model, quiet_agents=quiet_agents, reveal_pii=reveal_pii,
    )  # fmt: skip


def _queue_run(
    ctx: typer.Context,
    *,
    queue: str | None,
    task: str | None,
    agents: str | None,
    approve: bool,
    thread: str | None,
    resume: bool,
    budget: float | None,
    agents_file: Path | None,
    wait: bool,
    as_json: bool,
) -> None:
    """``run --queue``: check what a worker cannot honour, then enqueue (see commands.batch)."""
    from multiagent.commands.batch import enqueue_run_command
    from multiagent.nodes.agents_file import split_names

    if queue is None:
        raise UsageError("--wait follows a queued run: add --queue NAME")
    if approve:
        raise UsageError("--approve needs a terminal; a queued run has none: leave it out")
    if budget is not None:
        raise UsageError("--budget is not carried to workers; queued runs use the profile's")
    enqueue_run_command(
        cli_settings(ctx), queue=queue, task=task, team=split_names(agents), thread=thread,
        resume=resume, agents_file=agents_file, wait=wait, as_json=as_json,
    )  # fmt: skip


def meeting(
    ctx: typer.Context,
    topic: Annotated[
        str | None,
        typer.Argument(
            help="The topic (may be left out with --resume); - reads it from standard input, "
            "@FILE from a file."
        ),
    ] = None,
    participants: Annotated[
        str | None, typer.Option("--participants", help="Comma-separated participants.")
    ] = None,
    rounds: Annotated[int, typer.Option("--rounds", help="Rounds at most (1-20).")] = 2,
    thread: ThreadOption = None,
    resume: ResumeOption = False,
    budget: BudgetOption = None,
    agents_file: AgentsFileOption = None,
    memory: MemoryOption = "auto",
    no_stream: NoStreamOption = False,
    quiet_agents: QuietAgentsOption = False,
    as_json: JsonOption = False,
    model: ModelOption = None,
    reveal_pii: RevealOption = False,
) -> None:
    """Hold a meeting on TOPIC: rounds of discussion, a moderator, a streamed summary."""
    from multiagent.graphs.inputs import meeting_input
    from multiagent.nodes.agents_file import split_names

    refuse_on_resume(ctx, resume, "participants", "rounds")

    def make_inputs(settings: Settings, catalog: AgentCatalog, protect: Protect) -> Any:
        if resume and topic is None:
            return None
        return protect(
            meeting_input(
                topic, agents=catalog, participants=split_names(participants), rounds=rounds
            )
        )

    run_in_terminal(
        ctx, "meeting", make_inputs, thread=thread, resume=resume, budget=budget,
        agents_file=agents_file, no_stream=no_stream, as_json=as_json, memory=memory,
        model=model, quiet_agents=quiet_agents, reveal_pii=reveal_pii,
    )  # fmt: skip


def validate(
    ctx: typer.Context,
    text: Annotated[
        str | None,
        typer.Argument(help="The text to validate; - reads standard input, @FILE a file."),
    ] = None,
    validators: Annotated[
        int | None,
        typer.Option("--validators", help="Validators per item (1-6, within the profile)."),
    ] = None,
    threshold: Annotated[
        float | None, typer.Option("--threshold", help="Consensus threshold in (0, 1].")
    ] = None,
    batch: Annotated[
        Path | None, typer.Option("--batch", help='A JSONL file: one {"id", "text"} per line.')
    ] = None,
    concurrency: Annotated[
        int | None, typer.Option("--concurrency", help="Validator calls in flight at once (1-64).")
    ] = None,
    thread: ThreadOption = None,
    resume: ResumeOption = False,
    budget: BudgetOption = None,
    agents_file: AgentsFileOption = None,
    queue: Annotated[
        str | None,
        typer.Option(
            "--queue",
            help="Put --batch on this Redis queue for `multiagent worker`; with --thread ID "
            "--resume --budget USD, queue again what a batch stopped on its budget left.",
        ),
    ] = None,
    wait: Annotated[
        bool, typer.Option("--wait", help="With --queue: follow the batch until it is done.")
    ] = False,
    no_stream: NoStreamOption = False,
    quiet_agents: QuietAgentsOption = False,
    as_json: JsonOption = False,
    model: ModelOption = None,
    reveal_pii: RevealOption = False,
) -> None:
    """Cross-validate TEXT (or each item of --batch) with N validators against a threshold.

    Exit codes: 0 every item passed; 1 stopped (budget, provider), resumable; 2 bad input;
    3 consensus failed on an item; 4 an item is inconclusive (fewer validators answered than
    the profile's quorum); 130 interrupted (Ctrl-C), resumable.
    """
    from multiagent.commands._batch_run import is_local_batch, run_local_batch
    from multiagent.graphs.batch_file import read_batch_file
    from multiagent.graphs.inputs import validation_input

    if concurrency is not None and not 1 <= concurrency <= 64:
        raise UsageError(f"--concurrency must be between 1 and 64, got {concurrency}")
    if text is not None and batch is not None:
        raise UsageError("give TEXT or --batch FILE, not both")
    if queue is not None or wait:  # a distributed batch: enqueue and return (or follow it)
        from multiagent.commands.batch import enqueue_command

        no_model_option(model, "--queue")
        no_reveal_option(reveal_pii, "--queue")
        enqueue_command(
            cli_settings(ctx), batch=batch, queue=queue, wait=wait, validators=validators,
            threshold=threshold, agents_file=agents_file, as_json=as_json, budget=budget,
            thread=thread, resume=resume, concurrency=concurrency,
        )  # fmt: skip
        return
    refuse_on_resume(ctx, resume, "validators", "threshold")
    if resume and text is not None and is_local_batch(cli_settings(ctx), thread):
        raise UsageError(
            f"{thread!r} is a batch, not a thread of one text; leave TEXT out to resume it: "
            f"multiagent validate --thread {thread} --resume"
        )
    if batch is not None or (resume and text is None and is_local_batch(cli_settings(ctx), thread)):
        no_model_option(model, "--batch")
        no_reveal_option(reveal_pii, "--batch")
        run_local_batch(
            cli_settings(ctx), batch=batch, validators=validators, threshold=threshold,
            concurrency=concurrency, thread=thread, resume=resume, budget=budget,
            agents_file=agents_file, no_stream=no_stream, as_json=as_json,
        )  # fmt: skip

    def make_inputs(settings: Settings, catalog: AgentCatalog, protect: Protect) -> Any:
        if text is not None and batch is not None:
            raise UsageError("give TEXT or --batch FILE, not both")
        if resume and text is None and batch is None:
            return None
        if batch is None and text is None:
            raise UsageError("the text is empty; give TEXT or --batch FILE")
        items: list[Any] = read_batch_file(batch) if batch is not None else [text or ""]
        # before validation_input redacts them for good
        items = protect(items)
        return validation_input(
            items, settings=settings, agents=catalog, validators=validators, threshold=threshold
        )

    run_in_terminal(
        ctx, "validation", make_inputs, thread=thread, resume=resume, budget=budget,
        agents_file=agents_file, no_stream=no_stream, as_json=as_json,
        max_concurrency=concurrency, model=model, quiet_agents=quiet_agents,
        reveal_pii=reveal_pii,
    )  # fmt: skip
