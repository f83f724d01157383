"""The simulator's answers to requests it cannot serve: OpenAI's 400 error, never a 500.

:class:`~multiagent.sim.protocol.ChatRequest` keeps ``tools`` and ``response_format`` as free
dictionaries (the simulator ignores what it does not use), so the shapes it does use are
checked here, the way OpenAI checks them: a function tool names its function and its
``parameters`` are an object; a ``json_schema`` format carries a ``json_schema`` object whose
``schema`` is an object; a ``tool_choice`` that names a function or requires a tool comes
with it in ``tools``; ``stream_options`` comes only with ``stream: true``, and
``top_logprobs`` only with ``logprobs: true``. A failure is a
:class:`~fastapi.exceptions.RequestValidationError` with the location of the bad value, which
the app answers as ``400 invalid_request_error`` (OpenAI's status for a malformed request; the
OpenAPI document says the same).
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from multiagent.sim.protocol import ChatRequest


class _Function(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str = Field(min_length=1)
    parameters: dict[str, Any] | None = None


class _FunctionTool(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: Literal["function"] = "function"
    function: _Function


class _JsonSchema(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)

    name: str = Field(default="response", min_length=1)
    schema_: dict[str, Any] = Field(default_factory=dict, alias="schema")


class _ResponseFormat(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: Literal["text", "json_object", "json_schema"]
    json_schema: _JsonSchema | None = None


_TOOL = TypeAdapter(_FunctionTool)


def check_request(body: ChatRequest) -> None:
    """Raise :class:`RequestValidationError` when ``body`` holds a shape the simulator uses wrongly.

    Tools of another ``type`` than ``function`` are left alone: the simulator ignores them.
    """
    errors: list[Any] = []
    if body.stream_options is not None and not body.stream:
        errors.append(
            {
                "loc": ("body", "stream_options"),
                "msg": "only allowed when 'stream' is true (as OpenAI refuses it)",
                "type": "value_error",
            }
        )
    if body.top_logprobs is not None and not body.logprobs:
        errors.append(
            {
                "loc": ("body", "top_logprobs"),
                "msg": "only allowed when 'logprobs' is true (as OpenAI refuses it)",
                "type": "value_error",
            }
        )
    for index, tool in enumerate(body.tools or []):
        if tool.get("type", "function") != "function":
            continue
        try:
            _TOOL.validate_python(tool)
        except ValidationError as exc:
            errors += _located(exc, ("body", "tools", index))
    if not errors:
        errors += _tool_choice_errors(body)
    if body.response_format is not None:
        try:
            fmt = _ResponseFormat.model_validate(body.response_format)
        except ValidationError as exc:
            errors += _located(exc, ("body", "response_format"))
        else:
            if fmt.type == "json_schema" and fmt.json_schema is None:
                errors.append(
                    {
                        "loc": ("body", "response_format", "json_schema"),
                        "msg": "Field required when type is 'json_schema'",
                        "type": "missing",
                    }
                )
    if errors:
        raise RequestValidationError(errors)


def _tool_choice_errors(body: ChatRequest) -> list[dict[str, Any]]:
    """A ``tool_choice`` that needs a tool the request does not give: OpenAI refuses it (the
    simulator called the first tool instead, or answered in text)."""
    choice = body.tool_choice
    if isinstance(choice, dict):
        if choice.get("type", "function") != "function":
            return []  # newer kinds (allowed_tools, custom): the simulator leaves them alone
        function = choice.get("function")
        wanted = function.get("name") if isinstance(function, dict) else choice.get("name")
        if not isinstance(wanted, str):
            msg = "name the function: {'type': 'function', 'function': {'name': ...}}"
            return [{"loc": ("body", "tool_choice"), "msg": msg, "type": "missing"}]
    elif choice == "required":
        wanted = None
    else:
        return []
    names = [
        tool["function"]["name"]
        for tool in body.tools or []
        if tool.get("type", "function") == "function"
    ]
    if not names:
        msg = "only allowed when 'tools' are given"
    elif wanted is not None and wanted not in names:
        msg = f"no function named {wanted!r} in 'tools' (given: {', '.join(names)})"
    else:
        return []
    return [{"loc": ("body", "tool_choice"), "msg": msg, "type": "value_error"}]


def _located(exc: ValidationError, prefix: tuple[Any, ...]) -> list[dict[str, Any]]:
    return [
        {"loc": (*prefix, *error["loc"]), "msg": error["msg"], "type": error["type"]}
        for error in exc.errors()
    ]


__all__ = ["check_request"]
