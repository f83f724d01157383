"""A thread belongs to the workflow that made it, however it was made: by the CLI, by
``run_workflow``, or by a graph a notebook compiled with the CLI's checkpointer (which writes no
``workflow`` metadata). Resuming it as another workflow is refused naming the right command, and
``threads list`` shows it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from langchain_core.runnables import RunnableConfig
from typer.testing import CliRunner, Result

import multiagent
from multiagent.cli import app
from multiagent.errors import UsageError
from multiagent.graphs.runner import run_workflow
from multiagent.graphs.workflows import workflow_of
from multiagent.persistence.checkpointer import open_checkpointer

OFF = ("--memory", "off")
TASK = {"task": "Plan a launch", "team": ["researcher", "critic"], "planner_picks": False}


def cli(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


def _config(thread: str) -> RunnableConfig:
    return {"configurable": {"thread_id": thread}}


def _compiled_in_a_notebook(thread: str) -> None:
    """Run the orchestration graph as a notebook does: compiled by hand, invoked directly."""
    settings = multiagent.load_settings()
    with open_checkpointer(settings) as saver:
        graph = multiagent.build_orchestration_graph().compile(checkpointer=saver)
        graph.invoke(TASK, _config(thread), context=multiagent.build_context(settings))


def test_a_thread_compiled_outside_run_workflow_is_listed_and_kept_to_its_workflow(
    isolated_env: Path,
) -> None:
    _compiled_in_a_notebook("nb")
    with open_checkpointer(multiagent.load_settings()) as saver:
        # every checkpoint tells, the input one before the first step too
        owners = {workflow_of(found) for found in saver.list(_config("nb"))}
    assert owners == {"orchestration"}
    listed = json.loads(cli("threads", "list", "--json").stdout)["threads"]
    assert [(row["thread_id"], row["workflow"]) for row in listed] == [("nb", "orchestration")]
    assert json.loads(cli("threads", "show", "nb", "--json").stdout)["workflow"] == "orchestration"
    refused = cli("meeting", "--thread", "nb", "--resume", *OFF)
    assert refused.exit_code == 2, refused.output
    assert refused.stdout == ""
    assert refused.stderr.splitlines() == [
        "error: thread 'nb' belongs to the orchestration workflow, not the meeting workflow; "
        "resume it with `multiagent run --thread nb --resume`"
    ]


def test_run_workflow_refuses_to_resume_a_thread_of_another_workflow(
    isolated_env: Path,
) -> None:
    settings = multiagent.load_settings()
    with open_checkpointer(settings) as saver:
        made = run_workflow(
            "orchestration",
            TASK,
            context=multiagent.build_context(settings),
            checkpointer=saver,
            thread_id="api",
        )
        assert made.status == "completed"
        refusals = {
            "api": "'api' belongs to the orchestration workflow",
            "ghost": "unknown thread 'ghost'",
        }
        for thread_id, refusal in refusals.items():
            with pytest.raises(UsageError, match=refusal):
                run_workflow(
                    "meeting",
                    None,
                    context=multiagent.build_context(settings),
                    checkpointer=saver,
                    thread_id=thread_id,
                    resume=True,
                )
