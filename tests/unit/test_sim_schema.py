"""Instances of JSON schemas for the simulator's tool calls and structured output."""

from __future__ import annotations

import random

import pytest
from pydantic import BaseModel

from multiagent.sim.schema import instance_of


class Node(BaseModel):
    name: str
    children: list[Node] = []
    parent: Node | None = None


def test_a_recursive_model_gets_a_finite_valid_instance() -> None:
    schema = Node.model_json_schema()
    for seed in range(20):
        value = instance_of(schema, random.Random(seed))
        Node.model_validate(value)
        assert instance_of(schema, random.Random(seed)) == value


@pytest.mark.timeout(30)
def test_a_schema_without_a_finite_instance_is_a_value_error() -> None:
    required_cycle = {
        "$ref": "#/$defs/A",
        "$defs": {
            "A": {"type": "object", "properties": {"a": {"$ref": "#/$defs/A"}}, "required": ["a"]}
        },
    }
    with pytest.raises(ValueError, match="no finite instance"):
        instance_of(required_cycle, random.Random(0))
    self_alias = {"$ref": "#/$defs/A", "$defs": {"A": {"$ref": "#/$defs/A"}}}
    with pytest.raises(ValueError, match="refers to itself"):
        instance_of(self_alias, random.Random(0))
