"""Rich output of the workflow commands: the approval prompt and the closing report (the live
view is :mod:`multiagent.commands._live`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:  # imported where used, so `--help` stays fast
    from multiagent.graphs.run_outcome import WorkflowOutcome


_RESUME = {"orchestration": "run", "meeting": "meeting", "validation": "validate"}


def resume_command(outcome: WorkflowOutcome) -> str:
    """The command that continues the outcome's thread."""
    return thread_resume_command(outcome.workflow, outcome.thread_id)


def thread_resume_command(workflow: str, thread_id: str) -> str:
    """The command that continues thread ``thread_id`` of ``workflow``."""
    return f"multiagent {_RESUME[workflow]} --thread {thread_id} --resume"


def answers_in_flight() -> int:
    """Answers being generated for this process now, which the first Ctrl-C lets finish: calls
    sent to a provider and not answered yet, the in-process model's generation (its other
    calls wait for it and start none), not the simulator's (its waits stop at once)."""
    from multiagent.models._controllers import shared_controllers
    from multiagent.models.local_engine import generations_running

    sent = sum(
        controller.state().in_flight
        for (provider, _model, _url), controller in shared_controllers().items()
        if provider not in ("sim", "local")
    )
    return sent + generations_running()


def say_stopping(console: Console, workflow: str, thread_id: str) -> None:
    """The line the first Ctrl-C (or SIGTERM) prints at once: what the run still does, and the
    way on."""
    from multiagent._interrupt import terminated

    count = answers_in_flight()
    doing = (
        f"finishing {count} answer{'s' if count != 1 else ''} in flight"
        if count
        else "no new model call starts"
    )
    # a SIGTERM stops as Ctrl-C does (see multiagent._interrupt), and a second one too
    stopping, again = ("Stopping on SIGTERM", "SIGTERM") if terminated() else ("Stopping", "Ctrl-C")
    console.print(
        f"[yellow]{stopping}: {doing}; {again} again to stop now.[/] Resume with: "
        f"{thread_resume_command(workflow, thread_id)}",
        highlight=False,
        soft_wrap=True,
    )


def approve_in_terminal(console: Console) -> Any:
    """An approver that shows the plan on stderr and asks; ``None`` when stdin has no answer."""

    def approver(payload: dict[str, Any]) -> Any:
        table = Table(title=f"Plan for: {payload.get('task', '')}", title_justify="left")
        table.add_column("agent", style="bold")
        table.add_column("subtask")
        for step in payload.get("plan", []):
            table.add_row(step["agent"], step["subtask"])
        console.print(table)
        try:
            approved = typer.confirm("Approve this plan?", default=True, err=True)
        except typer.Abort:
            return None
        feedback = ""
        if approved:
            try:
                feedback = typer.prompt(
                    "Note for the agents (Enter for none)", default="", err=True
                )
            except typer.Abort:
                feedback = ""
        return {"approved": approved, "feedback": feedback}

    return approver


def _results_table(results: list[dict[str, Any]]) -> Table:
    table = Table(title="Cross-validation", title_justify="left")
    for column in ("item", "status", "approval", "confidence", "answered", "issues"):
        table.add_column(column)
    for r in results:
        colour = {"passed": "green", "failed": "red"}.get(r["status"], "yellow")
        answered = f"{r['responded']}/{r['validators']}"
        if r["failed"]:
            answered += f" (failed: {', '.join(r['failed'])})"
        table.add_row(
            r["id"],
            f"[{colour}]{r['status']}[/]",
            # the votes, not a rounded share: "0.67 vs 0.67" read as a pass that failed
            f"{round(r['approval'] * r['responded'])}/{r['responded']} = "
            f"{r['approval']:.4g} vs {r['threshold']:g}",
            f"{r['mean_confidence']:.2f}",
            answered,
            str(len(r["issues"])),
        )
    return table


def _analysis_hits(usage: dict[str, Any]) -> str:
    """`` · N analysis cache hits`` when the analysis cache answered (no call made), else ""."""
    hits = int(usage.get("analysis_cache_hits", 0))
    return f" · {hits} analysis cache hits" if hits else ""


def print_outcome(
    console: Console, outcome: WorkflowOutcome, report: dict[str, Any], *, streamed: set[str]
) -> None:
    """The result (unless it was streamed), then usage, status and how to resume."""
    output = report.get("output")
    if outcome.workflow == "validation":
        if report["results"]:
            console.print(_results_table(report["results"]))
    elif output and not streamed:
        heading = "collaborative output" if outcome.workflow == "orchestration" else "summary"
        console.rule(f"[bold]{heading}", align="left")
        console.print(output, markup=False, highlight=False)
    usage = report["usage"]
    console.print(
        f"[dim]thread {outcome.thread_id} · {usage['calls']} calls · "
        f"{usage['input_tokens']}+{usage['output_tokens']} tokens · ${usage['cost_usd']:.6f} · "
        f"{usage['cache_hits']} cache hits{_analysis_hits(usage)} · {outcome.seconds:.2f}s[/]",
        highlight=False,
        soft_wrap=True,
    )
    command = resume_command(outcome)
    if outcome.status == "budget_exceeded":
        kept = len(outcome.values.get("usage", []))
        advice = (
            # a larger budget for the run does not lift the project's cap
            "Resume once the day's cap allows (a new UTC day), or raise [budget] daily_usd in "
            f"multiagent.toml (MULTIAGENT_BUDGET__DAILY_USD): {command}"
            if outcome.daily_cap
            else f"Resume with a larger budget: {command} --budget USD"
        )
        console.print(
            f"[yellow]stopped: {outcome.message}.[/] Partial results kept ({kept} steps done). "
            + advice,
            highlight=False,
        )
    elif outcome.status == "failed":
        console.print(
            f"[red]stopped: {outcome.message} ({outcome.error}).[/] Resume: {command}",
            highlight=False,
        )
    elif outcome.status == "awaiting_approval":
        console.print(f"[yellow]The plan is waiting for approval.[/] Resume: {command}")
    elif outcome.status == "interrupted":
        console.print(
            f"[yellow]interrupted: {outcome.message}; the finished steps are kept.[/] "
            f"Resume: {command}",
            highlight=False,
            soft_wrap=True,
        )
    elif outcome.status == "completed" and outcome.message:  # e.g. validators that failed
        console.print(f"[yellow]{outcome.message}:[/] {command}", highlight=False)
    elif outcome.status == "rejected":
        console.print("[yellow]The plan was rejected; no agent worked.[/]")
