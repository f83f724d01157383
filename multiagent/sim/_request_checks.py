"""The simulator's answers to requests it cannot serve: OpenAI's 400 error, never a 500.

:class:`~multiagent.sim.protocol.ChatRequest` keeps ``tools`` and ``response_format`` as free
dictionaries (the simulator ignores what it does not use), so the shapes it does use are
checked here, the way OpenAI checks them: a function tool names its function and its
``parameters`` are an object; a ``json_schema`` format carries a ``json_schema`` object whose
``schema`` is an object. A failure is a :class:`~fastapi.exceptions.RequestValidationError`
with the location of the bad value, which the app answers as ``400 invalid_request_error``
(OpenAI's status for a malformed request; the OpenAPI document says the same).
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
    for index, tool in enumerate(body.tools or []):
        if tool.get("type", "function") != "function":
            continue
        try:
            _TOOL.validate_python(tool)
        except ValidationError as exc:
            errors += _located(exc, ("body", "tools", index))
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


def _located(exc: ValidationError, prefix: tuple[Any, ...]) -> list[dict[str, Any]]:
    return [
        {"loc": (*prefix, *error["loc"]), "msg": error["msg"], "type": error["type"]}
        for error in exc.errors()
    ]


__all__ = ["check_request"]
