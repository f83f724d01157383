"""Deterministic, schema-valid instances of a JSON schema, for the simulated provider's tool calls.

Covers what pydantic and ``convert_to_openai_tool`` emit: objects, arrays, enums and literals,
``anyOf``/``oneOf`` (optional fields), ``$ref`` into ``$defs``, numeric and length bounds.
A recursive schema (a tree of nodes) gets a finite instance: below :data:`_DEEP` levels an object
keeps only its required properties, an array its ``minItems`` and an optional value is null.
"""

from __future__ import annotations

import random
from typing import Any

from multiagent.sim.text import split_tokens

_WORDS = [
    "evidence",
    "consistent",
    "scope",
    "claim",
    "source",
    "estimate",
    "baseline",
    "risk",
    "assumption",
    "detail",
    "structure",
    "argument",
    "summary",
    "metric",
    "outcome",
]
_DEEP = 4  # nesting from which a value is kept as small as its schema allows
_DEEPEST = 64  # a schema still unfinished here has no finite instance (a required cycle)


def _resolve(schema: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    seen: set[str] = set()
    while "$ref" in schema:
        ref = schema["$ref"]
        if ref in seen:
            raise ValueError(f"the schema's $ref {ref!r} refers to itself")
        seen.add(ref)
        name = ref.rsplit("/", 1)[-1]
        defs = root.get("$defs") or root.get("definitions") or {}
        schema = {**defs.get(name, {}), **{k: v for k, v in schema.items() if k != "$ref"}}
    return schema


def _text(rng: random.Random, name: str, context: str, schema: dict[str, Any]) -> str:
    pieces = [p.strip() for p in split_tokens(context) if p.strip()][:8]
    words = [rng.choice(_WORDS) for _ in range(rng.randint(3, 7))]
    text = f"{name.replace('_', ' ')}: {' '.join(words)}"
    if pieces:
        text += f" ({' '.join(pieces[:4])})"
    if "maxLength" in schema:
        text = text[: int(schema["maxLength"])]
    if "minLength" in schema and len(text) < int(schema["minLength"]):
        text = text.ljust(int(schema["minLength"]), ".")
    return text


def _number(rng: random.Random, schema: dict[str, Any], *, integer: bool) -> float | int:
    low = schema.get("minimum", schema.get("exclusiveMinimum", 0))
    high = schema.get("maximum", schema.get("exclusiveMaximum", 1 if not integer else 10))
    if high < low:
        high = low
    if integer:
        lo = int(low) + (1 if "exclusiveMinimum" in schema else 0)
        hi = int(high) - (1 if "exclusiveMaximum" in schema else 0)
        return rng.randint(lo, max(lo, hi))
    value = round(rng.uniform(float(low), float(high)), 3)
    if "exclusiveMinimum" in schema and value <= low:
        value = low + (high - low) / 2
    if "exclusiveMaximum" in schema and value >= high:
        value = low + (high - low) / 2
    return value


def instance_of(
    schema: dict[str, Any],
    rng: random.Random,
    *,
    context: str = "",
    name: str = "value",
    root: dict[str, Any] | None = None,
    depth: int = 0,
) -> Any:
    """Return a value valid against ``schema``, drawn from ``rng``.

    Args:
        schema: A JSON schema (a tool's ``parameters``).
        rng: The source of every choice; seed it for determinism.
        context: Text that string values may quote, so they refer to the input.
        name: The property name, used to label string values.
        root: The document holding ``$defs``; defaults to ``schema``.
        depth: How deep in the document ``schema`` is (0: the top).

    Raises:
        ValueError: The schema has no finite instance (a cycle of required ``$ref``).
    """
    if depth > _DEEPEST:
        raise ValueError("the schema has no finite instance: a required property recurses")
    root = root if root is not None else schema
    schema = _resolve(schema, root)
    deep = depth >= _DEEP

    def inner(sub: dict[str, Any], label: str = name) -> Any:
        return instance_of(sub, rng, context=context, name=label, root=root, depth=depth + 1)

    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return rng.choice(list(schema["enum"]))
    for key in ("anyOf", "oneOf"):
        if key in schema:
            options = [o for o in schema[key] if _resolve(o, root).get("type") != "null"]
            if deep and len(options) < len(schema[key]):
                return None
            return inner(rng.choice(options or schema[key]))
    if "allOf" in schema:
        merged: dict[str, Any] = {}
        for part in schema["allOf"]:
            merged.update(_resolve(part, root))
        return instance_of(merged, rng, context=context, name=name, root=root, depth=depth)
    kind = schema.get("type", "object" if "properties" in schema else "string")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "string")
    if kind == "object":
        props: dict[str, Any] = schema.get("properties", {})
        required = schema.get("required", ())
        return {key: inner(sub, key) for key, sub in props.items() if not deep or key in required}
    if kind == "array":
        low = int(schema.get("minItems", 0))
        high = low if deep else int(schema.get("maxItems", max(low, 3)))
        items = schema.get("items", {"type": "string"})
        return [inner(items) for _ in range(rng.randint(low, max(low, high)))]
    if kind == "boolean":
        return rng.random() < 0.7
    if kind == "integer":
        return _number(rng, schema, integer=True)
    if kind == "number":
        return _number(rng, schema, integer=False)
    if kind == "null":
        return None
    return _text(rng, name, context, schema)
