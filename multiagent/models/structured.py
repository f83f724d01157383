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

import json
import re
import threading
import warnings
from collections import Counter
from collections.abc import Awaitable, Callable, Generator, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar

from langchain_core.language_models import LanguageModelInput
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langchain_core.runnables import Runnable, RunnableBinding, RunnableSequence
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import BaseModel, ValidationError

from multiagent.errors import MultiagentError
from multiagent.models.provider_errors import error_kind
from multiagent.observability.metrics import get_metrics

M = TypeVar("M", bound=BaseModel)

Step = Literal["tool_call", "json_schema", "json_mode", "text"]
STEPS: tuple[Step, ...] = ("tool_call", "json_schema", "json_mode", "text")
#: How a structured call ended: its first model call validated, a later step did, a repair
#: round did, or nothing did.
Result = Literal["first_try", "fallback", "after_repair", "failed"]
RESULTS: tuple[Result, ...] = ("first_try", "fallback", "after_repair", "failed")
#: Repair rounds one structured call may spend.
DEFAULT_MAX_REPAIRS = 1

_Model = Runnable[LanguageModelInput, BaseMessage]
_FENCED = re.compile(r"```(?:json|JSON)?\s*(.*?)```", re.DOTALL)
# a provider error of these kinds answering a step means "not this way", not "down"
_STEP_REFUSED = frozenset({"server", "client"})


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


# -- what the process learned about each model -----------------------------------------------


@dataclass
class _Known:
    refused: set[Step] = field(default_factory=set)
    working: Step | None = None


_LOCK = threading.Lock()
_KNOWN: dict[str, _Known] = {}


def model_key(model: object) -> str:
    """Who a model is, for remembering its structured-output methods: provider and name."""
    identity = getattr(model, "identity", None)
    if identity is not None:
        return f"{identity.provider}:{identity.model}"
    inner = getattr(model, "bound", model)
    name = getattr(inner, "model_name", None) or getattr(inner, "model", None) or ""
    return f"{type(inner).__name__}:{name}"


def known_method(model: object) -> Step | None:
    """The step that last produced a valid answer for ``model`` in this process."""
    with _LOCK:
        known = _KNOWN.get(model_key(model))
        return known.working if known else None


def refused_steps(model: object) -> frozenset[Step]:
    """Steps ``model`` cannot take, as learned in this process."""
    with _LOCK:
        known = _KNOWN.get(model_key(model))
        return frozenset(known.refused) if known else frozenset()


def reset_structured_state() -> None:
    """Forget what was learned about models and the counts (tests, a benchmark's start)."""
    with _LOCK:
        _KNOWN.clear()
    STRUCTURED_COUNTS.reset()


def _learn(key: str, *, working: Step, refused: set[Step]) -> None:
    with _LOCK:
        known = _KNOWN.setdefault(key, _Known())
        known.working = working
        known.refused |= refused


class StructuredCounts:
    """How structured calls ended, per node kind and step (thread-safe).

    ``snapshot()`` gives ``{node: {"first_try": n, "fallback": n, "after_repair": n,
    "failed": n, "steps": {step: n}}}``; the same counts go to the metrics store as
    ``structured_calls_total{node,result,step}``.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[tuple[str, Result, str]] = Counter()

    def add(self, *, node: str, result: Result, step: str) -> None:
        """Count one structured call of ``node`` that ended in ``result`` at ``step``."""
        with self._lock:
            self._counts[(node, result, step)] += 1
        labels = {"node": node, "result": result, "step": step}
        get_metrics().inc("structured_calls_total", labels=labels)

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """The counts so far, per node."""
        with self._lock:
            items = list(self._counts.items())
        out: dict[str, dict[str, Any]] = {}
        for (node, result, step), n in sorted(items):
            entry = out.setdefault(node, {**dict.fromkeys(RESULTS, 0), "steps": {}})
            entry[result] += n
            entry["steps"][step] = entry["steps"].get(step, 0) + n
        return out

    def reset(self) -> None:
        """Forget every count."""
        with self._lock:
            self._counts.clear()


#: The process's counts of structured calls (read by benchmarks and reports).
STRUCTURED_COUNTS = StructuredCounts()


# -- reading an answer ---------------------------------------------------------------------


def json_from_text(text: str) -> Any:
    """The JSON value in ``text``: the whole text, a fenced block, or the outermost ``{...}``.

    Raises:
        ValueError: No JSON object could be read.
    """
    candidates = [text.strip(), *(m.strip() for m in _FENCED.findall(text))]
    start, end = text.find("{"), text.rfind("}")
    if 0 <= start < end:
        candidates.append(text[start : end + 1])
    for candidate in candidates:
        try:
            return json.loads(candidate)
        except ValueError:
            continue
    raise ValueError("the reply holds no JSON object")


def _candidate(reply: BaseMessage, name: str) -> tuple[Any, bool]:
    """The answer a reply carries, and whether it came as a tool call: the named tool call's
    arguments (or the only tool call's), else JSON in its text."""
    calls = getattr(reply, "tool_calls", None) or []
    named = [call for call in calls if call["name"] == name]
    if named or len(calls) == 1:
        return (named or calls)[0]["args"], True
    return json_from_text(reply.text), False


def _problem(exc: Exception) -> str:
    """The validation problem as the repair prompt states it."""
    if isinstance(exc, ValidationError):
        lines = [
            f"- {'.'.join(str(p) for p in err['loc']) or 'answer'}: {err['msg']}"
            for err in exc.errors()[:8]
        ]
        return "\n".join(lines)
    return f"- {exc}"


# -- the ladder ----------------------------------------------------------------------------


def _provider_of(model: _Model) -> Any:
    """The model that decides request shapes: a pipeline model's provider, else the model."""
    return getattr(model, "provider_model", model)


def _binding_kwargs(runnable: Any) -> dict[str, Any] | None:
    """The keyword arguments a ``with_structured_output`` chain binds to its model."""
    first = runnable.first if isinstance(runnable, RunnableSequence) else runnable
    if isinstance(first, RunnableBinding):
        return {k: v for k, v in first.kwargs.items() if k != "ls_structured_output_format"}
    return None


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
        self.tool = tool or convert_to_openai_tool(schema)
        self.function: dict[str, Any] = self.tool["function"]
        self.name: str = self.function["name"]
        self.max_repairs = max_repairs
        self.key = model_key(model)
        self.calls = 0

    def _bind(self, step: Step) -> _Model | None:
        """The runnable for ``step``, or ``None`` when this model cannot take it."""
        if step == "text":
            return self.model
        if step == "tool_call":
            try:
                bound: _Model = self.model.bind_tools(  # type: ignore[attr-defined]
                    [self.tool], tool_choice=self.name
                )
            except (AttributeError, NotImplementedError, ValueError, TypeError):
                return None
            return bound
        method = "json_schema" if step == "json_schema" else "json_mode"
        try:
            with warnings.catch_warnings():  # a model's "overriding the method" notes: we look
                warnings.simplefilter("ignore")
                chain = _provider_of(self.model).with_structured_output(
                    self.function, method=method
                )
        except (AttributeError, NotImplementedError, ValueError, TypeError):
            return None
        kwargs = _binding_kwargs(chain)
        if not kwargs or "response_format" not in kwargs:
            return None  # a provider whose "JSON mode" is a tool call: step 1 covered it
        if step == "json_mode":
            # servers that constrain JSON mode by a schema (llama.cpp) read it here
            kwargs["response_format"] = {**kwargs["response_format"], "schema": self._json()}
        return self.model.bind(**kwargs)

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
        found, as_tool_call = _candidate(reply, self.name)
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
        problem = "no step was tried"
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
                if step == "text" or not _refusal(reply):
                    raise reply
                refused.add(step)
                continue
            while True:
                try:
                    value, given = self._check(reply, step)
                except (ValidationError, ValueError) as exc:
                    problem = _problem(exc)
                else:
                    _learn(self.key, working=step, refused=refused)
                    result: Result = (
                        "after_repair"
                        if repairs
                        else "first_try"
                        if self.calls == 1
                        else "fallback"
                    )
                    return StructuredResult(value, given, result, self.calls)
                if repairs >= self.max_repairs or not _answered_in_form(reply, self.name, step):
                    break
                repairs += 1
                reply = yield Request(step, runnable, self._repair(asked, reply, problem))
                self.calls += 1
                if isinstance(reply, Exception):
                    raise reply
        detail = problem.replace("\n", "; ")
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


def _refusal(exc: Exception) -> bool:
    """Whether an error answering a step says the model does not take requests of its kind."""
    return isinstance(exc, NotImplementedError) or error_kind(exc) in _STEP_REFUSED


def _answered_in_form(reply: BaseMessage, name: str, step: Step) -> bool:
    """Whether a reply is worth repairing: it answered, if wrongly, rather than said nothing.

    A forced tool call that came back as prose goes to the next step instead (which asks for
    JSON in another way); on the last step any reply is repaired.
    """
    if step == "text":
        return True
    calls = getattr(reply, "tool_calls", None) or []
    if calls:
        return True
    try:
        json_from_text(reply.text)
    except ValueError:
        return False
    return True


def _counted(node: str, outcome: StructuredResult[M]) -> StructuredResult[M]:
    """Count a structured call's outcome under ``node``; return it."""
    STRUCTURED_COUNTS.add(node=node, result=outcome.result, step=outcome.step)
    return outcome


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
    requests = StructuredLadder(model, schema, tool=tool, max_repairs=max_repairs).requests(
        messages
    )
    try:
        request = next(requests)
        while True:
            reply: BaseMessage | Exception
            try:
                reply = send(request.runnable, request.messages)
            except Exception as exc:  # handed to the ladder, which re-raises what is not its
                reply = exc
            request = requests.send(reply)
    except StopIteration as done:
        return _counted(node, done.value)
    except StructuredOutputError:
        STRUCTURED_COUNTS.add(node=node, result="failed", step="none")
        raise


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
    requests = StructuredLadder(model, schema, tool=tool, max_repairs=max_repairs).requests(
        messages
    )
    try:
        request = next(requests)
        while True:
            reply: BaseMessage | Exception
            try:
                reply = await send(request.runnable, request.messages)
            except Exception as exc:
                reply = exc
            request = requests.send(reply)
    except StopIteration as done:
        return _counted(node, done.value)
    except StructuredOutputError:
        STRUCTURED_COUNTS.add(node=node, result="failed", step="none")
        raise


def _plain_invoke(runnable: _Model, messages: list[BaseMessage]) -> BaseMessage:
    return runnable.invoke(messages)


async def _plain_ainvoke(runnable: _Model, messages: list[BaseMessage]) -> BaseMessage:
    return await runnable.ainvoke(messages)
