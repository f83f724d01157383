"""LangGraph Server's request hook: a run's input is checked and redacted before the server
stores it.

The server copies a run's JSON input into the first checkpoint (the ``__start__`` channel and the
state of step 0) before any node runs, and no input schema or validator sees a dict input, so
redacting in the first node would leave the raw value in the thread's history. The one place
that sees the input before the server stores anything is its auth layer: a handler for
``threads.create_run`` receives the run's arguments by reference. ``langgraph.json`` names
:data:`auth`; when the run's profile (its ``context``, else the process's settings) switches
``features.pii_redaction`` on, the handler rewrites the input in place with the same
:func:`~multiagent.safety.redact_input` the CLI and the Python API use, and a command's
``resume`` value (a reviewer's feedback) and ``update`` with it. A state update through
``threads.update_state`` is not seen here: the server hands its auth handler a
``threads.update`` event holding the thread id only, no values. The compiled graph checks it
against its state schema (:mod:`multiagent.graphs.state_updates`; the server's HTTP app answers
a refusal with 422) and redacts it (:mod:`multiagent.graphs.redacting`), by the server's own
profile.

A run's input is checked here too (:func:`~multiagent.graphs.server_inputs.check_run_input`), by
the check its workflow's first node makes, with the agents and profile of the run's context (the
assistant's, the run's values over it), and a key its input schema does not name is refused: the
server stores a run and its input's first checkpoint before any node runs, so a bad input (no
task, an unknown agent, ``rounds: 0``, a threshold of 1.5) would otherwise be a run that fails,
on a thread that holds it. A command's ``update`` is checked against the state schema and its
``goto`` against the graph's nodes, and a cron's input as a run's (the server starts each of its
runs past this handler). Each is answered 422 with the check's one line, before anything is
stored.

The same handler refuses a resume (``command={"resume": ...}``), or an update without a
``goto``, on a thread with no checkpoint, such as one just made with ``threads.create()``:
LangGraph would start that run from ``START`` with the server's ``Command`` (its ``goto`` is
``None``) as the input and fail inside its own ``__start__`` task with ``TypeError: 'NoneType'
object is not iterable``, before any node of ours runs. The request is answered 409 with one
line naming the thread instead. So is a run with no input and no command on such a thread (one
whose run was cancelled with ``action="rollback"``), which LangGraph fails with "Received no
input for __start__"; on a thread with a checkpoint such a run continues from it. A thread with
a run in flight is let through: that run may yet pause it. A new input on a thread that already
holds a run (none in flight) is refused with 409 as well: the workflows' state adds up, so a
second task or topic would mix with the first (see :func:`_refuse_a_second_input`).

A context is checked where the server takes it: a run's (when the caller gave one), an
assistant's (``assistants.create``/``update``) and a cron's. The server drops the keys a graph's
context schema does not name before the graph sees them, with a log line only, so a misspelt key
(``{"budget": 0.01}``) would otherwise run silently with the profile's budget; and a bad value
would fail each run later with pydantic's multi-line report. Both are answered 422 with one line
naming the key and the valid ones, before anything is stored. A cron's input is redacted as a
run's is: the server stores the cron's payload as given and starts each of its runs from it,
past this handler.

LangGraph requires an ``authenticate`` handler beside it. Ours admits every request, which is
what ``langgraph dev`` does with no auth configured; a deployment with its own authentication
replaces :func:`admit` with its check and keeps the other handlers.
"""

from __future__ import annotations

import asyncio
from typing import Any

from langgraph_sdk import Auth, get_client
from langgraph_sdk.auth.types import (
    AssistantsCreate,
    AssistantsUpdate,
    CronsCreate,
    CronsUpdate,
    RunsCreate,
)
from langgraph_sdk.errors import NotFoundError

from multiagent.graphs.redacting import redaction_on
from multiagent.graphs.server_inputs import check_context, check_run_input
from multiagent.safety import redact_input

auth = Auth()


@auth.authenticate
async def admit() -> Auth.types.MinimalUserDict:
    """Every request is let through, as ``langgraph dev`` does without auth."""
    return {"identity": "anonymous", "permissions": []}


@auth.on.threads.create_run
async def check_run(ctx: Auth.types.AuthContext, value: RunsCreate) -> None:
    """Refuse a resume or an update with nothing to continue; redact the run's input in place
    when its profile says so; allow the run."""
    kwargs: dict[str, Any] = value.get("kwargs") or {}
    # without a context of the caller's the server passes the config's ``configurable`` as one,
    # keys of its own included: only a context the caller gave is checked
    if ((kwargs.get("config") or {}).get("configurable") or {}).get("__context_provided__"):
        check_context(kwargs.get("context"))
    command = kwargs.get("command") or {}
    checked = command.get("update") is not None or command.get("goto")
    if checked or (not command and kwargs.get("input") is not None):
        await check_run_input(value["assistant_id"], kwargs.get("context"), kwargs, command)
    # a command with a ``goto`` starts there and needs no checkpoint; without one, LangGraph
    # fails the run on a thread that has none (a resume and an update alike)
    continues = command.get("resume") is not None or command.get("update") is not None
    if continues and not command.get("goto") and value.get("thread_id") is not None:
        what = "resume" if command.get("resume") is not None else "update"
        await _refuse_nothing_to_continue(str(value["thread_id"]), what=what)
    elif not command and kwargs.get("input") is None and value.get("thread_id") is not None:
        # no input continues the thread from its last checkpoint (after a cancelled run); with
        # none (a run rolled back), LangGraph fails the run with "Received no input for
        # __start__"
        await _refuse_nothing_to_continue(str(value["thread_id"]), what="continue")
    elif not command and value.get("thread_id") is not None:
        await _refuse_a_second_input(str(value["thread_id"]))
    # what the run brings that the server stores: its input, and a command's resume value (a
    # reviewer's feedback) and state update, each written to a checkpoint as given
    given = {"input": kwargs.get("input"), **{k: command.get(k) for k in ("resume", "update")}}
    if all(part is None for part in given.values()):
        return  # a run with nothing new to store
    # settings read files and redaction is CPU work: both off the server's event loop
    redacted = await asyncio.to_thread(_redacted, given, kwargs.get("context"))
    if kwargs.get("input") is not None:
        kwargs["input"] = redacted["input"]
    for key in ("resume", "update"):
        if command.get(key) is not None:
            command[key] = redacted[key]


async def _refuse_nothing_to_continue(thread_id: str, *, what: str) -> None:
    """Raise 409 when ``thread_id`` has no checkpoint and no run in flight (or does not exist)
    for a run that would ``what`` (resume, update, continue) it."""
    kept, busy = await _thread_now(thread_id)
    if kept or busy:  # a run ahead of this one may pause the thread before this one starts
        return
    if what == "resume":
        detail = (
            f"thread {thread_id} has nothing to resume: no run has paused it (it has no "
            "checkpoint); start a run with an input first"
        )
    elif what == "update":
        detail = (
            f"thread {thread_id} has nothing to update: it has no checkpoint; start a run "
            "with an input first, or give the command a goto"
        )
    else:
        detail = (
            f"thread {thread_id} has nothing to continue: it has no checkpoint (a run cancelled "
            "with rollback leaves none); start a run with an input"
        )
    raise Auth.exceptions.HTTPException(status_code=409, detail=detail)


async def _thread_now(thread_id: str) -> tuple[bool, bool]:
    """Whether ``thread_id`` has a checkpoint, and whether a run is in flight on it (neither
    for a thread that does not exist yet: a run with ``if_not_exists="create"`` makes it)."""
    # the server's own API, in process and past authentication (the SDK's loopback transport)
    async with get_client() as client:
        try:
            state = await client.threads.get_state(thread_id)
            thread = await client.threads.get(thread_id)
        except NotFoundError:
            return False, False
    return state["checkpoint"] is not None, thread["status"] == "busy"


async def _refuse_a_second_input(thread_id: str) -> None:
    """Raise 409 when ``thread_id`` already holds a run and none is in flight: a workflow's
    state adds up (a meeting's transcript and rounds, the agents' contributions, the usage), so
    a new task or topic there mixes with the last one's (a third round of a two-round meeting,
    a synthesis of both tasks' contributions). The CLI refuses a thread id already taken the
    same way. On a busy thread the run's ``multitask_strategy`` decides, as the caller chose."""
    kept, busy = await _thread_now(thread_id)
    if not kept or busy:  # a new thread, one a cancelled run rolled back; or the strategy's
        return
    raise Auth.exceptions.HTTPException(
        status_code=409,
        detail=(
            f"thread {thread_id} already holds a run, and a new input would add to its state "
            "(transcript, contributions, usage); start it on a new thread, or continue this one "
            "with no input or a command (resume, update)"
        ),
    )


@auth.on.assistants.create
async def check_assistant(ctx: Auth.types.AuthContext, value: AssistantsCreate) -> None:
    """Refuse an assistant whose context its runs would fail on, or silently lose part of."""
    check_context(value.get("context"))


@auth.on.assistants.update
async def check_assistant_update(ctx: Auth.types.AuthContext, value: AssistantsUpdate) -> None:
    """As :func:`check_assistant`: the context an update gives replaces the assistant's."""
    check_context(value.get("context"))


@auth.on.crons.create
async def check_cron(ctx: Auth.types.AuthContext, value: CronsCreate) -> None:
    """Refuse a cron's bad context or input; redact its input in place when its profile says
    so."""
    payload: dict[str, Any] = value.get("payload") or {}
    await _check_cron_payload(payload, payload.get("context"), payload.get("assistant_id"))


@auth.on.crons.update
async def check_cron_update(ctx: Auth.types.AuthContext, value: CronsUpdate) -> None:
    """As :func:`check_cron`; an update without a context keeps the cron's (the server merges
    the two payloads), so its input is checked and redacted by the cron's context."""
    payload: dict[str, Any] = value.get("payload") or {}
    if payload.get("input") is None:
        await _check_cron_payload(payload, payload.get("context"), None)
        return
    stored = await _cron_payload(str(value["cron_id"]))
    context = payload["context"] if "context" in payload else stored.get("context")
    await _check_cron_payload(payload, context, stored.get("assistant_id"))


async def _check_cron_payload(payload: dict[str, Any], context: Any, assistant_id: Any) -> None:
    """Check a cron's context and input (each of its runs starts from them, past any caller:
    a bad one would fail every run), then redact its input."""
    check_context(payload.get("context"))
    if payload.get("input") is None:
        return
    if assistant_id is not None:
        await check_run_input(assistant_id, context, payload, {})
    redacted = await asyncio.to_thread(_redacted, {"input": payload["input"]}, context)
    payload["input"] = redacted["input"]


async def _cron_payload(cron_id: str) -> dict[str, Any]:
    """The stored payload of cron ``cron_id`` (empty when there is no such cron)."""
    async with get_client() as client:
        offset = 0
        while page := await client.crons.search(limit=100, offset=offset):
            for cron in page:
                if str(cron["cron_id"]) == cron_id:
                    return {"assistant_id": cron["assistant_id"], **(cron.get("payload") or {})}
            offset += len(page)
    return {}


def _redacted(payload: dict[str, Any], context: Any) -> dict[str, Any]:
    return redact_input(payload, enabled=redaction_on(context))
