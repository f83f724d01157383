"""Our errors keep their message when LangGraph Server reports a failed run.

The server's serialiser shows the message of an exception only for the builtin kinds it trusts
(``ValueError``, ``RuntimeError``, ...); any other becomes "An internal error occurred", so a
budget stop or a bad context value would reach an SDK client with no reason given.
"""

from __future__ import annotations

import json

import pytest

from multiagent.errors import (
    BudgetExceededError,
    ConfigError,
    DamagedStoreError,
    MultiagentError,
    UsageError,
)

serde = pytest.importorskip("langgraph_api.serde")


@pytest.mark.parametrize(
    "error",
    [
        MultiagentError("a model call kept failing"),
        UsageError("input 'rounds' must be a whole number from 1 to 20, got 0"),
        ConfigError("model 'x' has no price in profile dev_balanced"),
        DamagedStoreError("checkpoints.sqlite is damaged; restore a copy"),
        BudgetExceededError("the next call would pass the budget", spent_usd=0.1, budget_usd=0.1),
    ],
)
def test_the_server_shows_our_message(error: MultiagentError) -> None:
    shown = json.loads(serde.json_dumpb(error))
    assert shown == {"error": type(error).__name__, "message": str(error)}


def test_bad_input_is_a_value_error_and_the_rest_runtime_errors() -> None:
    assert issubclass(UsageError, ValueError)
    assert issubclass(BudgetExceededError, RuntimeError)
    assert not issubclass(BudgetExceededError, ValueError)
