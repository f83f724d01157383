"""Deterministic, schema-valid instances of a JSON schema, for the simulated provider's tool calls.

Covers what pydantic and ``convert_to_openai_tool`` emit: objects, arrays, enums and literals,
``anyOf``/``oneOf`` (optional fields), ``$ref`` into ``$defs``, numeric and length bounds.
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


def _resolve(schema: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        ref = schema["$ref"]
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
) -> Any:
    """Return a value valid against ``schema``, drawn from ``rng``.

    Args:
        schema: A JSON schema (a tool's ``parameters``).
        rng: The source of every choice; seed it for determinism.
        context: Text that string values may quote, so they refer to the input.
        name: The property name, used to label string values.
        root: The document holding ``$defs``; defaults to ``schema``.
    """
    root = root if root is not None else schema
    schema = _resolve(schema, root)
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return rng.choice(list(schema["enum"]))
    for key in ("anyOf", "oneOf"):
        if key in schema:
            options = [o for o in schema[key] if _resolve(o, root).get("type") != "null"]
            return instance_of(
                rng.choice(options or schema[key]), rng, context=context, name=name, root=root
            )
    if "allOf" in schema:
        merged: dict[str, Any] = {}
        for part in schema["allOf"]:
            merged.update(_resolve(part, root))
        return instance_of(merged, rng, context=context, name=name, root=root)
    kind = schema.get("type", "object" if "properties" in schema else "string")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "string")
    if kind == "object":
        props: dict[str, Any] = schema.get("properties", {})
        return {
            key: instance_of(sub, rng, context=context, name=key, root=root)
            for key, sub in props.items()
        }
    if kind == "array":
        low = int(schema.get("minItems", 0))
        high = int(schema.get("maxItems", max(low, 3)))
        items = schema.get("items", {"type": "string"})
        return [
            instance_of(items, rng, context=context, name=name, root=root)
            for _ in range(rng.randint(low, max(low, high)))
        ]
    if kind == "boolean":
        return rng.random() < 0.7
    if kind == "integer":
        return _number(rng, schema, integer=True)
    if kind == "number":
        return _number(rng, schema, integer=False)
    if kind == "null":
        return None
    return _text(rng, name, context, schema)
