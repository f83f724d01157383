"""A state update is checked against the graph's state schema before LangGraph writes it.

``update_state`` (LangGraph Server's ``threads.update_state``, Studio's state editor, a
notebook's ``graph.update_state``) and a ``Command``'s ``update`` hand their values to the
graph's channels as given: LangGraph checks neither the keys nor the types. A key the state does
not have is dropped, yet a checkpoint is written; a value of the wrong type is stored and breaks
the first step that reads it: a router (``'>' not supported between instances of 'int' and
'str'``, which LangGraph Server answers 500 when ``as_node`` runs the routers on the update) or a
reducer (``can only concatenate list (not "str") to list``), or every later run of the thread.

:func:`check_state_update` refuses such an update with one line naming the key, the value and
what it takes, before anything is written: a compiled workflow graph checks every
``update_state`` (:class:`~multiagent.graphs.redacting.RedactingGraph`), and LangGraph Server's
request hook a run's ``command.update`` (:mod:`multiagent.graphs.server_auth`). Types are checked
strictly (``"2"`` is no ``int``; JSON numbers are ``float``), since the value is stored as given,
not converted. A key with a reducer takes what its reducer takes: a list to append for
``operator.add`` (or ``{"__overwrite__": value}`` to replace it), any message form for
``add_messages``. What a value means (a team of known agents, ``rounds`` from 1 to 20) is the
workflow's input check (:mod:`multiagent.nodes.input_defaults`), which needs the run's context
and is not repeated here: the next run checks it and fails with one line.
"""

from __future__ import annotations

import functools
import operator
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, NotRequired, Required

from langgraph.types import Command, Overwrite
from pydantic import TypeAdapter, ValidationError

from multiagent.errors import UsageError

__all__ = ["StateUpdateError", "check_state_update", "state_keys"]

#: The key LangGraph reads ``{"__overwrite__": value}`` by: the value replaces a reducer's.
_OVERWRITE = "__overwrite__"


class StateUpdateError(UsageError):
    """A state update whose keys or values the graph's state schema does not allow."""


class _Key(typing.NamedTuple):
    """One state key: its type (checked strictly), and its reducer when it has one."""

    adapter: TypeAdapter[Any]
    reducer: Callable[[Any, Any], Any] | None
    shown: str


@functools.cache
def _keys(schema: type) -> dict[str, _Key]:
    """The keys of state ``schema`` (a ``TypedDict``), in declaration order."""
    keys: dict[str, _Key] = {}
    for name, hint in typing.get_type_hints(schema, include_extras=True).items():
        while typing.get_origin(hint) in (NotRequired, Required):
            (hint,) = typing.get_args(hint)
        reducer = None
        if typing.get_origin(hint) is typing.Annotated:
            base, *extras = typing.get_args(hint)
            if extras and callable(extras[-1]):
                reducer, hint = extras[-1], base
        keys[name] = _Key(TypeAdapter(hint), reducer, _type_name(hint))
    return keys


def _type_name(hint: Any) -> str:
    """``hint`` as a reader knows it: ``list[Utterance]``, ``float | None``."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Annotated:
        return _type_name(args[0])
    if origin in (typing.Union, types.UnionType):
        names = [_type_name(arg) for arg in args]
        return "AnyMessage" if len(names) > 3 else " | ".join(names)
    if origin is not None:
        return f"{origin.__name__}[{', '.join(_type_name(arg) for arg in args)}]"
    return hint.__name__ if isinstance(hint, type) else str(hint)


def _is_key(part: str) -> bool:
    """Whether a location part of pydantic's is a key, not the member of a union it tried
    (``ValidationItem``, ``str``, ``list[str]``)."""
    return part.isidentifier() and part.islower() and part not in _UNION_TAGS


_UNION_TAGS = frozenset({"str", "int", "float", "bool", "none"})


def state_keys(schema: type) -> list[str]:
    """The keys of state ``schema``, in declaration order."""
    return list(_keys(schema))


def check_state_update(schema: type, values: Any) -> None:
    """Raise :class:`StateUpdateError` unless ``values`` fits state ``schema``.

    Args:
        schema: The graph's state ``TypedDict`` (``graph.builder.state_schema``).
        values: An update as ``update_state`` takes it: a mapping of state keys, a list of
            them or of ``(key, value)`` pairs, a ``Command`` (its ``update`` is checked), or
            ``None`` (nothing to write).
    """
    if values is None:
        return
    if isinstance(values, Command):
        check_state_update(schema, values.update)
        return
    if isinstance(values, list | tuple):
        for part in values:
            # a pair is one key's update (``Command(update=[("key", value)])``)
            pair = isinstance(part, list | tuple) and len(part) == 2 and isinstance(part[0], str)
            check_state_update(schema, {part[0]: part[1]} if pair else part)
        return
    keys = _keys(schema)
    if not isinstance(values, Mapping):
        raise StateUpdateError(
            f"a state update must be an object of state keys ({', '.join(keys)}), "
            f"got {values!r:.60}"
        )
    for name, value in values.items():
        key = keys.get(name)
        if key is None:
            raise StateUpdateError(f"state key {name!r} is unknown; valid: {', '.join(keys)}")
        _check_value(name, key, value)


def _check_value(name: str, key: _Key, value: Any) -> None:
    given = value
    if key.reducer is not None:
        if isinstance(value, Overwrite):
            value = value.value
        elif isinstance(value, Mapping) and len(value) == 1 and _OVERWRITE in value:
            value = value[_OVERWRITE]
        elif key.reducer is not operator.add:
            # the reducer takes its own forms (``add_messages``: a text, a message, a list of
            # role and content pairs...): it is asked what ``value`` adds to an empty value
            try:
                value = key.reducer([], value)
            except Exception as exc:  # a reducer's refusal: its type varies
                lines = str(exc).strip().splitlines()
                reason = lines[0] if lines else type(exc).__name__
                raise StateUpdateError(f"state {name}={given!r:.60} is invalid: {reason}") from None
    try:
        key.adapter.validate_python(value, strict=True)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = name + "".join(
            f"[{part}]" if isinstance(part, int) else f".{part}"
            for part in error["loc"]
            if isinstance(part, int) or _is_key(part)
        )
        raise StateUpdateError(
            f"state {where}={error['input']!r:.60} is invalid: {error['msg']} "
            f"({name} takes {key.shown})"
        ) from None
