"""Structured output from any chat model: a ladder of methods, each tried as the model allows.

Real models differ in what they support: one answers a forced named tool call, another only a
JSON mode (llama.cpp's server rejects ``response_format={"type": "json_schema"}`` with a 500 but
honours ``{"type": "json_object", "schema": ...}``), a third has neither and writes JSON in a
fenced block, and a sampling model sometimes does not comply at all. The ladder tries, in order:

1. ``tool_call``: a forced call of a named tool whose parameters are the schema;
2. ``json_schema`` / ``json_mode``: the provider's own structured modes (the request its
   ``with_structured_output(method=...)`` would send);
3. ``text``: JSON parsed from plain text (a fenced block or a bare object);

and after a step whose answer did not validate, one bounded ``repair`` round that sends the
pydantic error back. When nothing validates the call ends in :class:`StructuredOutputError`,
which the workflow handles (the planner falls back to a default split, a validator counts as
not answering). Every attempt is an ordinary model call, so the pipeline records one
``CallRecord`` for each; :data:`STRUCTURED_COUNTS` counts how each structured call ended, per
node kind, and a step that a model cannot take (no ``bind_tools``, a provider error answering
it) is skipped for that model for the rest of the process once another step has worked.

The ladder is written once, as a generator of requests (:meth:`StructuredLadder.requests`), so
the sync and async drivers (:func:`run_structured`, :func:`arun_structured`) are a few lines.
"""

from __future__ import annotations

import contextlib
import json
import weakref
from collections.abc import Awaitable, Callable, Generator, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import BaseModel, ValidationError

from multiagent.errors import MultiagentError
from multiagent.models._structured_bind import Model, bind_step, is_refusal
from multiagent.models._structured_memory import (
    RESULTS,
    STEPS,
    STRUCTURED_COUNTS,
    Result,
    Step,
    StructuredCounts,
    known_method,
    learn,
    model_key,
    refused_steps,
    reset_structured_state,
)
from multiagent.models._structured_read import (
    answered_in_form,
    candidate,
    json_from_text,
    problem,
)
from multiagent.models.completion_cache import HeldAnswers, held_answers
from multiagent.models.retry import server_errors_final

M = TypeVar("M", bound=BaseModel)

DEFAULT_MAX_REPAIRS = 1

_Model = Model


#: The tool definition of each schema, as JSON: pydantic's JSON schema and LangChain's conversion
#: cost about 0.4 ms, more than the rest of a call to a fast model, and a schema class does not
#: change. Kept as text so every call gets its own copy to bind (a provider may edit it).
_TOOLS: weakref.WeakKeyDictionary[type[BaseModel], str] = weakref.WeakKeyDictionary()


def tool_of(schema: type[BaseModel]) -> dict[str, Any]:
    """The OpenAI tool definition whose parameters are ``schema``'s JSON schema (a new copy;
    the schema is converted once per class)."""
    found = _TOOLS.get(schema)
    if found is None:
        found = _TOOLS[schema] = json.dumps(convert_to_openai_tool(schema))
    tool: dict[str, Any] = json.loads(found)
    return tool


class StructuredOutputError(MultiagentError):
    """The model did not return the structured answer it was asked for, by any method."""


@dataclass(frozen=True)
class StructuredResult(Generic[M]):
    """A validated structured answer and how it was obtained.

    Attributes:
        value: The answer, validated against the schema.
        step: The ladder step that produced it.
        result: ``first_try``, ``fallback`` or ``after_repair``.
        calls: Model calls this structured call made (each one recorded by the pipeline).
    """

    value: M
    step: Step
    result: Result
    calls: int


@dataclass(frozen=True)
class Request:
    """One model call the ladder wants made: ``runnable.invoke(messages)``."""

    step: Step
    runnable: _Model
    messages: list[BaseMessage]


class StructuredLadder(Generic[M]):
    """The steps of one structured call, as requests for a driver to send.

    Args:
        model: The chat model (usually the pipeline's model for one agent).
        schema: The pydantic model the answer must validate against.
        tool: An OpenAI tool definition to send instead of ``schema``'s own (to add enums
            known only at run time); its arguments must still validate against ``schema``.
        max_repairs: Repair rounds allowed.
    """

    def __init__(
        self,
        model: _Model,
        schema: type[M],
        *,
        tool: dict[str, Any] | None = None,
        max_repairs: int = DEFAULT_MAX_REPAIRS,
    ) -> None:
        self.model = model
        self.schema = schema
        self.tool = tool or tool_of(schema)
        self.function: dict[str, Any] = self.tool["function"]
        self.name: str = self.function["name"]
        self.max_repairs = max_repairs
        self.key = model_key(model)
        self.calls = 0

    def _bind(self, step: Step) -> _Model | None:
        """The runnable for ``step``, or ``None`` when this model cannot take it."""
        return bind_step(self.model, step, tool=self.tool)

    def _json(self) -> dict[str, Any]:
        parameters: dict[str, Any] = self.function.get("parameters") or {}
        return parameters

    def _instructed(self, messages: list[BaseMessage], step: Step) -> list[BaseMessage]:
        """The prompt for ``step``: the JSON steps also say what to write."""
        if step == "tool_call":
            return messages
        schema = json.dumps(self._json(), separators=(",", ":"))
        note = (
            f"Answer with only a JSON object (no prose) for {self.name!r}"
            f"{': ' + self.function['description'] if self.function.get('description') else ''}"
            f". It must match this JSON schema:\n{schema}"
        )
        return [*messages, HumanMessage(note)]

    def _check(self, reply: BaseMessage, step: Step) -> tuple[M, Step]:
        """The validated answer, and the step that really gave it (a tool-call request
        answered with JSON in text counts as ``text``)."""
        found, as_tool_call = candidate(reply, self.name)
        given: Step = "text" if step == "tool_call" and not as_tool_call else step
        return self.schema.model_validate(found), given

    def requests(
        self, messages: Sequence[BaseMessage]
    ) -> Generator[Request, BaseMessage | Exception, StructuredResult[M]]:
        """Yield each model call to make; receive its reply (or the error it raised).

        Returns:
            The validated answer and how it was obtained.

        Raises:
            StructuredOutputError: No step and no repair gave a valid answer.
            Exception: A provider failure of another kind (rate limit, timeout, budget) is
                re-raised as it came: the ladder does not hide the world's failures.
        """
        prompt = list(messages)
        skip = refused_steps(self.model)
        refused: set[Step] = set()
        repairs = 0
        last_problem = "no step was tried"
        for step in STEPS:
            runnable = None if step in skip else self._bind(step)
            if runnable is None:
                refused.add(step)
                continue
            asked = self._instructed(prompt, step)
            reply = yield Request(step, runnable, asked)
            self.calls += 1
            if isinstance(reply, Exception):
                # a plain call failing is the provider failing; a special request refused
                # (400, 422, 500 for an unsupported response_format) is "not this way"
                if step == "text" or not is_refusal(reply, step):
                    raise reply
                refused.add(step)
                continue
            while True:
                try:
                    value, given = self._check(reply, step)
                except (ValidationError, ValueError) as exc:
                    last_problem = problem(exc)
                else:
                    learn(self.key, working=step, refused=refused)
                    result: Result = (
                        "after_repair"
                        if repairs
                        else "first_try"
                        if self.calls == 1
                        else "fallback"
                    )
                    return StructuredResult(value, given, result, self.calls)
                if repairs >= self.max_repairs or not answered_in_form(reply, self.name, step):
                    break
                repairs += 1
                reply = yield Request(step, runnable, self._repair(asked, reply, last_problem))
                self.calls += 1
                if isinstance(reply, Exception):
                    raise reply
        detail = last_problem.replace("\n", "; ")
        raise StructuredOutputError(
            f"the model gave no valid {self.name!r} answer after {self.calls} call(s) "
            f"({repairs} repair); last problem: {detail}"[:400]
        )

    def _repair(
        self, asked: list[BaseMessage], reply: BaseMessage, problem: str
    ) -> list[BaseMessage]:
        """The conversation so far, the bad answer as text, and what was wrong with it."""
        calls = getattr(reply, "tool_calls", None) or []
        shown = json.dumps(calls[0]["args"]) if calls else reply.text
        return [
            *asked,
            AIMessage(content=shown),
            HumanMessage(
                f"That answer does not validate:\n{problem}\nReply again with only the "
                f"corrected JSON object for {self.name!r}."
            ),
        ]


class _Driven(Generic[M]):
    """Drives a ladder's requests; holds its result and counts how it ended, under ``node``.

    The sync and async drivers differ only in how they wait for a reply, so each is a loop of
    :meth:`reply` calls inside ``with driven:``; the ladder's ``StopIteration`` (its result) and
    its :class:`StructuredOutputError` (counted, then raised) are handled here once.
    """

    def __init__(self, ladder: StructuredLadder[M], messages: Sequence[BaseMessage], node: str):
        self.requests = ladder.requests(messages)
        self.node = node
        self.result: StructuredResult[M] | None = None
        self._holding = held_answers()
        self._held = HeldAnswers()

    def first(self) -> Request:
        """The ladder's first request."""
        return next(self.requests)

    def reply(self, reply: BaseMessage | Exception) -> Request:
        """Hand the ladder a reply (or the error a call raised); its next request.

        The completion cache keeps a reply only once the ladder takes it: a ladder that returns
        took the last reply; one that asks again did not take it (see ``HeldAnswers``).
        """
        try:
            following = self.requests.send(reply)
        except StopIteration:
            self._held.accept()
            raise
        self._held.reject()
        return following

    def __enter__(self) -> _Driven[M]:
        self._held = self._holding.__enter__()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: Any, tb: Any) -> bool:
        self._holding.__exit__(exc_type, exc, tb)
        if isinstance(exc, StopIteration):
            self.result = exc.value
            STRUCTURED_COUNTS.add(node=self.node, result=exc.value.result, step=exc.value.step)
            return True
        if isinstance(exc, StructuredOutputError):
            STRUCTURED_COUNTS.add(node=self.node, result="failed", step="none")
        return False

    def value(self) -> StructuredResult[M]:
        """The result, once the ladder has returned it."""
        assert self.result is not None  # the loop only ends by the ladder returning or raising
        return self.result


def run_structured(
    model: _Model,
    messages: Sequence[BaseMessage],
    schema: type[M],
    *,
    tool: dict[str, Any] | None = None,
    invoke: Callable[[_Model, list[BaseMessage]], BaseMessage] | None = None,
    node: str = "",
    max_repairs: int = DEFAULT_MAX_REPAIRS,
) -> StructuredResult[M]:
    """Ask ``model`` for an answer in ``schema``, down the ladder until one validates.

    Args:
        model: Any chat model (the pipeline's, so every attempt is paced, cached and recorded).
        messages: The prompt.
        schema: The pydantic model the answer must validate against.
        tool: A tool definition to send instead of ``schema``'s own (see
            :class:`StructuredLadder`).
        invoke: How to make one call (default ``runnable.invoke(messages)``); a node passes
            its own, to call under its config and accounting scope.
        node: The node kind the outcome is counted under.
        max_repairs: Repair rounds allowed.

    Raises:
        StructuredOutputError: Nothing validated; the failure is counted.
    """
    send = invoke or _plain_invoke
    ladder = StructuredLadder(model, schema, tool=tool, max_repairs=max_repairs)
    with _Driven(ladder, messages, node) as driven:
        request = driven.first()
        while True:
            try:
                with _probing(model, request.step):
                    reply: BaseMessage | Exception = send(request.runnable, request.messages)
            except Exception as exc:  # handed to the ladder, which re-raises what is not its
                reply = exc
            request = driven.reply(reply)
    return driven.value()


async def arun_structured(
    model: _Model,
    messages: Sequence[BaseMessage],
    schema: type[M],
    *,
    tool: dict[str, Any] | None = None,
    invoke: Callable[[_Model, list[BaseMessage]], Awaitable[BaseMessage]] | None = None,
    node: str = "",
    max_repairs: int = DEFAULT_MAX_REPAIRS,
) -> StructuredResult[M]:
    """Async :func:`run_structured`."""
    send = invoke or _plain_ainvoke
    ladder = StructuredLadder(model, schema, tool=tool, max_repairs=max_repairs)
    with _Driven(ladder, messages, node) as driven:
        request = driven.first()
        while True:
            try:
                with _probing(model, request.step):
                    reply: BaseMessage | Exception = await send(request.runnable, request.messages)
            except Exception as exc:
                reply = exc
            request = driven.reply(reply)
    return driven.value()


def _probing(model: _Model, step: Step) -> contextlib.AbstractContextManager[None]:
    """A JSON mode not yet known to work for ``model`` is asked once: a server error answering
    it is a refusal (see :func:`~._structured_bind.is_refusal`), not a failure to retry. Once a
    mode has worked, its server errors are the provider failing and are retried as any."""
    if step in ("json_schema", "json_mode") and known_method(model) != step:
        return server_errors_final()
    return contextlib.nullcontext()


def _plain_invoke(runnable: _Model, messages: list[BaseMessage]) -> BaseMessage:
    return runnable.invoke(messages)


async def _plain_ainvoke(runnable: _Model, messages: list[BaseMessage]) -> BaseMessage:
    return await runnable.ainvoke(messages)


__all__ = [
    "DEFAULT_MAX_REPAIRS",
    "RESULTS",
    "STEPS",
    "STRUCTURED_COUNTS",
    "Request",
    "Result",
    "Step",
    "StructuredCounts",
    "StructuredLadder",
    "StructuredOutputError",
    "StructuredResult",
    "arun_structured",
    "json_from_text",
    "known_method",
    "model_key",
    "refused_steps",
    "reset_structured_state",
    "run_structured",
    "tool_of",
]
