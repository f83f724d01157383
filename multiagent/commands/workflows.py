"""``multiagent run | meeting | validate``: the three workflows, streamed, checkpointed, resumable.

Every run is a thread in the checkpointer (``--thread ID`` or a generated id, printed). Every
agent's tokens stream under its name (``--quiet-agents``: only the final answer's). Exit codes:

- 0: the run completed (or a plan was rejected, or is waiting for approval); for ``validate``,
  every item passed;
- 1: it stopped on the budget or a provider failure (resumable with ``--resume``); for
  ``validate``, also an item that no validator answered (each failed after retries);
- 2: bad input;
- 3: ``validate`` only: consensus failed on at least one item (the validators that answered
  rejected it);
- 4: ``validate`` only: no item failed, but at least one is inconclusive (fewer validators
  answered than the profile's quorum);
- 130: interrupted by Ctrl-C; the finished steps are kept and the resume command is printed.

``--reveal-pii`` (with a profile that redacts) replaces each personal value of the input by a
numbered placeholder (``<EMAIL_1>``) instead of ``[REDACTED_EMAIL]``; the mapping lives in this
process's memory only, and only the final printed output (the result and ``--json``) shows the
values again. Checkpoints, memory, caches, metrics, logs, traces and the live token stream hold
the placeholders. A resumed run restores only the values of the input it was given.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from multiagent.commands._shared import cli_settings, console, err_console, print_json
from multiagent.errors import UsageError
from multiagent.policies import Settings, Tier

if TYPE_CHECKING:  # imported where used, so `--help` stays fast
    from multiagent.graphs.runner import WorkflowOutcome
    from multiagent.graphs.workflows import Workflow
    from multiagent.nodes.agents_file import AgentCatalog
    from multiagent.nodes.context import WorkflowContext
    from multiagent.safety import Pseudonymizer

_EXIT = {
    "completed": 0, "rejected": 0, "awaiting_approval": 0, "budget_exceeded": 1, "failed": 1,
    "interrupted": 130,
}  # fmt: skip
#: ``validate``'s exit codes when the run completed but consensus did not pass every item.
EXIT_CONSENSUS_FAILED = 3
EXIT_INCONCLUSIVE = 4

ThreadOption = Annotated[
    str | None,
    typer.Option(
        "--thread",
        help="Thread id: names a new run, or the one to resume (1-128 of A-Z a-z 0-9 . _ -, "
        "starting with a letter or digit).",
    ),
]
ResumeOption = Annotated[
    bool,
    typer.Option(
        "--resume", help="Continue --thread from its last checkpoint; nothing done reruns."
    ),
]
BudgetOption = Annotated[
    float | None,
    typer.Option("--budget", help="USD the thread may spend (default: the profile's budget_usd)."),
]
AgentsFileOption = Annotated[
    Path | None,
    typer.Option("--agents-file", help="agents.toml to use (default: the one in MULTIAGENT_HOME)."),
]
NoStreamOption = Annotated[
    bool, typer.Option("--no-stream", help="Print only the result, not progress and tokens.")
]
QuietAgentsOption = Annotated[
    bool,
    typer.Option(
        "--quiet-agents",
        help="Hide each agent's streamed tokens; progress, costs and the final answer still show.",
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON document.")]
ModelOption = Annotated[
    str | None,
    typer.Option(
        "--model",
        help="provider:name every agent calls (sim:, openai:, or any init_chat_model provider "
        "installed, e.g. ollama:llama3); priced by [prices] in multiagent.toml.",
    ),
]
RevealOption = Annotated[
    bool,
    typer.Option(
        "--reveal-pii",
        help="With a profile that redacts: input values become numbered placeholders "
        "(<EMAIL_1>) held in memory only, and the final output shows your values again; "
        "everything stored keeps the placeholders. No effect when redaction is off.",
    ),
]
#: The input as the run may store it: pseudonymised under ``--reveal-pii``, else as it is.
Protect = Callable[[Any], Any]
MEMORY_CHOICES = ("auto", "minilm", "lexical", "off")
MemoryOption = Annotated[
    str,
    typer.Option(
        "--memory",
        help="Agent memory: auto (MiniLM when installed, else lexical), minilm, lexical, off.",
    ),
]


def _execute(
    ctx: typer.Context,
    workflow: Workflow,
    make_inputs: Callable[[Settings, AgentCatalog, Protect], Any],
    *,
    thread: str | None,
    resume: bool,
    budget: float | None,
    agents_file: Path | None,
    no_stream: bool,
    as_json: bool,
    max_concurrency: int | None = None,
    memory: str = "off",
    model: str | None = None,
    quiet_agents: bool = False,
    reveal_pii: bool = False,
) -> None:
    """Check the input, run the workflow as a thread, print the outcome, exit with its code."""
    from multiagent._interrupt import stop_on_ctrl_c
    from multiagent.commands._render import say_stopping
    from multiagent.graphs.workflows import new_thread_id
    from multiagent.models.ledger import check_budget_value
    from multiagent.models.pipeline import ModelPipeline
    from multiagent.nodes.agents_file import load_agents
    from multiagent.nodes.context import build_context
    from multiagent.observability.history import persist_process
    from multiagent.observability.tracing import configure_tracing, shutdown_tracing

    settings = cli_settings(ctx)
    if not resume:  # one id, one kind: `validate --thread ID --resume` must find the one
        from multiagent.commands._batch_run import refuse_batch_id

        refuse_batch_id(settings, thread)
    elif thread is not None:
        _refuse_running_thread(settings, thread)
    if budget is not None and budget < 0:
        raise UsageError(f"--budget must be at least 0 USD, got {budget}")
    check_budget_value(budget, source="--budget")
    if memory not in MEMORY_CHOICES:
        raise UsageError(f"unknown --memory {memory!r}; valid: {', '.join(MEMORY_CHOICES)}")
    agents = load_agents(settings, agents_file=agents_file)
    reveal = _pseudonymizer(settings, reveal_pii=reveal_pii)
    inputs = make_inputs(settings, agents, reveal.redact_value if reveal else _as_is)
    # prices and budgets (against the calls this run makes) are checked before anything is
    # opened or stored
    pipeline = ModelPipeline(
        settings, model=model, model_source="--model", calls=_budget_calls(workflow, agents, inputs)
    )
    pipeline.check_budget(
        settings.profile.budget_usd if budget is None else budget,
        source="--budget" if budget is not None else settings.origin_of("budget_usd"),
    )
    if not resume:  # named now, so that the first Ctrl-C can say how to resume it
        thread = thread or new_thread_id(workflow)
    configure_tracing(settings)
    with ExitStack() as stack:
        # whatever the run's end, its metrics reach the history and its spans the exporter
        stack.callback(shutdown_tracing)
        stack.callback(persist_process, settings)
        # Ctrl-C (and SIGTERM) stops the run at its next model call, never inside LangGraph's
        # thread pool, and says so at once (on stderr: stdout may hold the --json document)
        on_stop = None if thread is None else partial(say_stopping, err_console, workflow, thread)
        stack.enter_context(stop_on_ctrl_c(on_stop=on_stop, sigterm=True))

        def make_context() -> WorkflowContext:
            store = None
            if memory != "off":
                from multiagent.persistence.memory_background import (  # Chroma: on a thread
                    open_agent_memory_in_background as open_agent_memory,
                )

                store = stack.enter_context(open_agent_memory(settings, embeddings=memory))
            return build_context(
                settings, agents=agents, budget_usd=budget, memory=store, pipeline=pipeline
            )

        outcome = _run_and_show(
            workflow,
            inputs,
            settings=settings,
            make_context=make_context,
            thread=thread,
            resume=resume,
            no_stream=no_stream,
            as_json=as_json,
            max_concurrency=max_concurrency,
            quiet_agents=quiet_agents,
            reveal=reveal,
        )
    raise typer.Exit(code=exit_code(outcome.status, outcome.values.get("results")))


def _refuse_on_resume(ctx: typer.Context, resume: bool, *names: str) -> None:
    """Options that shape a new run mean nothing to a resumed thread, which keeps what it
    started with: refused, as a task that differs from the thread's is, never ignored."""
    if not resume:
        return
    for name in names:
        source = ctx.get_parameter_source(name)
        if source is not None and source.name != "DEFAULT":  # given, not left to its default
            option = "--" + name.replace("_", "-")
            raise UsageError(
                f"{option} cannot be used with --resume: a resumed thread keeps what it "
                f"started with; leave {option} out"
            )


def _refuse_running_thread(settings: Settings, thread: str) -> None:
    """A thread that a live process is running is not resumed beside it: both would run every
    step from the same checkpoint and pay for it twice. The registry is the checkpoint
    database's (:func:`~multiagent.observability.live_starts.running_threads`), so a run on
    another machine sharing PostgreSQL counts; a process killed mid-run does not."""
    from multiagent.observability.live_starts import running_threads

    process = running_threads(settings).get(thread)
    if process is not None:
        raise UsageError(
            f"thread {thread!r} is running in {process}; wait for it to end, or stop it "
            "and then resume"
        )


def _budget_calls(workflow: Workflow, agents: AgentCatalog, inputs: Any) -> list[tuple[str, Tier]]:
    """The ``(node, tier)`` calls ``workflow`` makes with ``inputs``: each must fit the budget.

    A resumed run (no ``inputs``) keeps its team in its checkpoint: only the nodes whose agent
    is fixed are checked then.
    """
    given = inputs if isinstance(inputs, dict) else {}
    if workflow == "orchestration":
        from multiagent.nodes.planner import PLANNER
        from multiagent.nodes.synthesizer import SYNTHESIZER

        fixed = [("plan", PLANNER), ("synthesize", SYNTHESIZER)]
        chosen = [("work", name) for name in given.get("team", [])]
    elif workflow == "meeting":
        from multiagent.nodes.meeting import MODERATOR, SECRETARY

        fixed = [("moderate", MODERATOR), ("summarize", SECRETARY)]
        chosen = [("speak", name) for name in given.get("participants", [])]
    else:
        fixed, chosen = [], [("validate", name) for name in given.get("validators", [])]
    return [(node, agents[name].tier) for node, name in (*fixed, *chosen) if name in agents]


def _as_is(value: Any) -> Any:
    """The input unchanged (no ``--reveal-pii``): the runner redacts it if the profile says so."""
    return value


def _pseudonymizer(settings: Settings, *, reveal_pii: bool) -> Pseudonymizer | None:
    """This run's in-memory mapping under ``--reveal-pii`` with redaction on, else ``None``."""
    if not (reveal_pii and settings.profile.features.pii_redaction):
        return None  # without redaction nothing is replaced, so nothing needs restoring
    from multiagent.safety import Pseudonymizer

    return Pseudonymizer()


def _no_reveal_option(reveal_pii: bool, option: str) -> None:
    """``--reveal-pii`` restores one run's output in this terminal; a batch or queue has none."""
    if reveal_pii:
        raise UsageError(f"--reveal-pii cannot be used with {option}; leave --reveal-pii out")


def exit_code(status: str, results: list[dict[str, Any]] | None = None) -> int:
    """The exit code of a run that ended in ``status`` (see the module docstring); a completed
    validation's code says whether consensus passed every item of ``results``."""
    code = _EXIT[status]
    if code or status != "completed" or not results:
        return code
    statuses = {r["status"] for r in results}
    if "failed" in statuses:
        return EXIT_CONSENSUS_FAILED
    return EXIT_INCONCLUSIVE if "inconclusive" in statuses else 0


def _no_model_option(model: str | None, option: str) -> None:
    """``--model`` is for runs in this process; batches and queued runs use the profile's."""
    if model is not None:
        raise UsageError(f"--model {model} cannot be used with {option}; leave --model out")


def _run_and_show(
    workflow: Workflow,
    inputs: Any,
    *,
    settings: Settings,
    make_context: Callable[[], WorkflowContext],
    thread: str | None,
    resume: bool,
    no_stream: bool,
    as_json: bool,
    max_concurrency: int | None,
    quiet_agents: bool = False,
    reveal: Pseudonymizer | None = None,
) -> WorkflowOutcome:
    """Run with live output (unless ``--json``/``--no-stream``), then print the outcome; under
    ``--reveal-pii`` the printed outcome (only) shows the input's values again."""
    from multiagent._interrupt import wait_for_stop_notice
    from multiagent.commands._live import LiveView
    from multiagent.commands._render import (
        approve_in_terminal,
        print_outcome,
        resume_command,
    )
    from multiagent.graphs.execute import execute_workflow
    from multiagent.graphs.report import outcome_report

    view = None if as_json or no_stream else LiveView(console, quiet_agents=quiet_agents)
    if view is not None and not resume:
        console.print(f"[dim]{workflow} · profile {settings.env} · provider {settings.provider}[/]")
    outcome = execute_workflow(
        workflow,
        inputs,
        settings=settings,
        context=make_context,
        thread_id=thread,
        resume=resume,
        approver=approve_in_terminal(err_console),
        on_event=view,
        max_concurrency=max_concurrency or settings.profile.rate_limit.max_concurrency,
    )
    wait_for_stop_notice()  # Ctrl-C's line comes before the outcome that follows it
    if view is not None:
        view.close()
    report = outcome_report(outcome)
    streamed = view.streamed if view else set()
    if reveal is not None:
        report = reveal.restore_value(report)
        streamed = set()  # the live tokens showed placeholders: print the restored result
    if as_json:
        print_json(report)
        if outcome.status == "interrupted":  # stdout holds the one document; the hint goes aside
            err_console.print(f"interrupted; resume: {resume_command(outcome)}", highlight=False)
    else:
        print_outcome(console, outcome, report, streamed=streamed)
    return outcome


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
        _no_model_option(model, "--queue")
        _no_reveal_option(reveal_pii, "--queue")
        _queue_run(
            ctx, queue=queue, task=task, agents=agents, approve=approve, thread=thread,
            resume=resume, budget=budget, agents_file=agents_file, wait=wait, as_json=as_json,
        )  # fmt: skip
        return
    _refuse_on_resume(ctx, resume, "agents", "approve")

    def make_inputs(settings: Settings, catalog: AgentCatalog, protect: Protect) -> Any:
        if resume and task is None:
            return None
        return protect(
            orchestration_input(
                task, agents=catalog, team=split_names(agents), require_approval=approve
            )
        )

    _execute(
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

    _refuse_on_resume(ctx, resume, "participants", "rounds")

    def make_inputs(settings: Settings, catalog: AgentCatalog, protect: Protect) -> Any:
        if resume and topic is None:
            return None
        return protect(
            meeting_input(
                topic, agents=catalog, participants=split_names(participants), rounds=rounds
            )
        )

    _execute(
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

        _no_model_option(model, "--queue")
        _no_reveal_option(reveal_pii, "--queue")
        enqueue_command(
            cli_settings(ctx), batch=batch, queue=queue, wait=wait, validators=validators,
            threshold=threshold, agents_file=agents_file, as_json=as_json, budget=budget,
            thread=thread, resume=resume, concurrency=concurrency,
        )  # fmt: skip
        return
    _refuse_on_resume(ctx, resume, "validators", "threshold")
    if resume and text is not None and is_local_batch(cli_settings(ctx), thread):
        raise UsageError(
            f"{thread!r} is a batch, not a thread of one text; leave TEXT out to resume it: "
            f"multiagent validate --thread {thread} --resume"
        )
    if batch is not None or (resume and text is None and is_local_batch(cli_settings(ctx), thread)):
        _no_model_option(model, "--batch")
        _no_reveal_option(reveal_pii, "--batch")
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

    _execute(
        ctx, "validation", make_inputs, thread=thread, resume=resume, budget=budget,
        agents_file=agents_file, no_stream=no_stream, as_json=as_json,
        max_concurrency=concurrency, model=model, quiet_agents=quiet_agents,
        reveal_pii=reveal_pii,
    )  # fmt: skip
