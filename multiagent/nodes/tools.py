"""Tools an agent may be given: LangChain tools, named in ``agents.toml`` or passed as objects.

``agents.toml`` names a tool by a built-in short name (``calculator``, ``word_count``: small and
safe, no network, no file system, no ``eval``) or by import path ``module:attribute``, whose
attribute is a LangChain tool (``@tool``, a ``BaseTool``; MCP tools loaded with
``langchain-mcp-adapters`` are ``BaseTool`` too) or a plain function with a docstring (made a
tool with LangChain's ``tool``). In Python an :class:`~multiagent.nodes.agents.AgentSpec` takes
tool objects directly. :func:`run_tool_calls` executes a reply's tool calls the way LangGraph's
``ToolNode`` does: each call's result, or its error, comes back as a ``ToolMessage``.
"""

from __future__ import annotations

import ast
import importlib
import operator
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from langchain_core.messages import AIMessage, ToolMessage
from langchain_core.runnables import RunnableConfig
from langchain_core.tools import BaseTool, tool
from pydantic import ValidationError

from multiagent.errors import ConfigError

_BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY: dict[type[ast.unaryop], Callable[[Any], Any]] = {
    ast.UAdd: operator.pos,
    ast.USub: operator.neg,
}


def _evaluate(node: ast.AST) -> float:
    """Evaluate an arithmetic expression tree of numbers and + - * / // % **."""
    if isinstance(node, ast.Expression):
        return _evaluate(node.body)
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
        return float(node.value)
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _evaluate(node.left), _evaluate(node.right)
        if isinstance(node.op, ast.Pow) and abs(right) > 64:
            raise ValueError("exponent too large")
        return float(_BINARY[type(node.op)](left, right))
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return float(_UNARY[type(node.op)](_evaluate(node.operand)))
    raise ValueError("only numbers and + - * / // % ** are allowed")


@tool
def calculator(expression: str) -> str:
    """Evaluate an arithmetic expression such as ``(120 - 45) * 0.2``."""
    try:
        value = _evaluate(ast.parse(expression.strip(), mode="eval"))
    except (SyntaxError, ValueError, ZeroDivisionError, OverflowError) as exc:
        return f"error: cannot evaluate {expression!r}: {exc}"
    return f"{value:g}"


@tool
def word_count(text: str) -> str:
    """Count the words and sentences of a text."""
    words = len(text.split())
    sentences = sum(text.count(mark) for mark in ".!?") or (1 if words else 0)
    return f"{words} words, {sentences} sentences"


#: Tools by the name ``agents.toml`` uses.
TOOLS: dict[str, BaseTool] = {"calculator": calculator, "word_count": word_count}


def resolve_tool(ref: str | BaseTool, *, source: str = "tools") -> BaseTool:
    """The tool ``ref`` names: a built-in short name, a ``module:attribute`` path, or a tool.

    Raises:
        ConfigError: The name is unknown, the module cannot be imported, the attribute is
            missing, or it is not a tool or a function (one line naming it, and the fix).
    """
    if isinstance(ref, BaseTool):
        return ref
    found = TOOLS.get(ref)
    if found is not None:
        return found
    module_name, sep, attribute = ref.partition(":")
    if not sep or not module_name or not attribute:
        raise ConfigError(
            f"{source}: unknown tool {ref!r}; valid: {', '.join(TOOLS)}, or an import path "
            "module:attribute"
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(
            f"{source}: tool {ref!r}: cannot import module {module_name!r} ({exc}); "
            "install it or fix the path"
        ) from None
    value = getattr(module, attribute, None)
    if isinstance(value, BaseTool):
        return value
    if callable(value) and getattr(value, "__doc__", None):
        made: BaseTool = tool(value)
        return made
    what = "has no attribute" if value is None else "is not a tool or a documented function:"
    raise ConfigError(f"{source}: tool {ref!r}: module {module_name!r} {what} {attribute!r}")


def resolve_tools(refs: Iterable[str | BaseTool], *, source: str = "tools") -> list[BaseTool]:
    """:func:`resolve_tool` for each of ``refs``; two tools of one name are an error."""
    tools = [resolve_tool(ref, source=source) for ref in refs]
    names = [t.name for t in tools]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise ConfigError(f"{source}: two tools are named {twice[0]!r}; give each its own name")
    return tools


def run_tool_calls(
    reply: AIMessage, tools: Sequence[BaseTool], *, config: RunnableConfig | None = None
) -> list[ToolMessage]:
    """Run each tool call of ``reply``; every call gets a ``ToolMessage`` back, in order.

    A call of a tool the agent does not have, or with arguments that do not validate, is
    answered with an error message for the model to read (as LangGraph's ``ToolNode`` does);
    any other exception from a tool is a bug in that tool and propagates.
    """
    by_name = {t.name: t for t in tools}
    answers: list[ToolMessage] = []
    for call in reply.tool_calls:
        call_id = call["id"] or ""
        found = by_name.get(call["name"])
        if found is None:
            valid = ", ".join(by_name)
            text = f"Error: {call['name']!r} is not a valid tool, try one of [{valid}]."
            answers.append(ToolMessage(text, tool_call_id=call_id, status="error"))
            continue
        try:
            result = found.invoke({**call, "type": "tool_call"}, config)
        except ValidationError as exc:
            text = f"Error: invalid arguments for {call['name']!r}: {exc.errors()[0]['msg']}"
            answers.append(ToolMessage(text, tool_call_id=call_id, status="error"))
            continue
        answers.append(
            result
            if isinstance(result, ToolMessage)
            else ToolMessage(str(result), tool_call_id=call_id)
        )
    return answers
