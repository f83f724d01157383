"""One workflow run in this terminal: check the input, run it as a thread, show it, exit.

Every run is a thread in the checkpointer (``--thread ID`` or a generated id, printed). Every
agent's tokens stream under its name (``--quiet-agents``: only the final answer's); the process
exits with the outcome's code (:mod:`multiagent.commands._exit_codes`).

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
from typing import TYPE_CHECKING, Any

import typer

from multiagent.commands._exit_codes import exit_code
from multiagent.commands._shared import cli_settings, console, err_console, print_json
from multiagent.commands._workflow_options import MEMORY_CHOICES
from multiagent.errors import UsageError
from multiagent.policies import Settings

if TYPE_CHECKING:  # imported where used, so `--help` stays fast
    from multiagent.graphs.run_outcome import WorkflowOutcome
    from multiagent.graphs.workflows import Workflow
    from multiagent.nodes.agents_file import AgentCatalog
    from multiagent.nodes.context import WorkflowContext
    from multiagent.safety import Pseudonymizer

#: The input as the run may store it: pseudonymised under ``--reveal-pii``, else as it is.
Protect = Callable[[Any], Any]


def run_in_terminal(
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
    from multiagent.graphs.workflows import new_thread_id, workflow_calls
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
        settings,
        model=model,
        model_source="--model",
        calls=workflow_calls(workflow, agents, inputs),
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


def _as_is(value: Any) -> Any:
    """The input unchanged (no ``--reveal-pii``): the runner redacts it if the profile says so."""
    return value


def _pseudonymizer(settings: Settings, *, reveal_pii: bool) -> Pseudonymizer | None:
    """This run's in-memory mapping under ``--reveal-pii`` with redaction on, else ``None``."""
    if not (reveal_pii and settings.profile.features.pii_redaction):
        return None  # without redaction nothing is replaced, so nothing needs restoring
    from multiagent.safety import Pseudonymizer

    return Pseudonymizer()


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
