"""Errors the project raises on purpose.

Every error a user can cause by what they typed or configured is a :class:`UsageError`: the CLI
prints its message as one line on stderr and exits with code 2. Errors from the world (a provider
that keeps failing, a server that cannot be reached) are :class:`MultiagentError` and exit 1.

They derive from the builtins they mean (``RuntimeError``; ``ValueError`` for bad input): LangGraph
Server shows a failed run's message only for such types (others become "An internal error
occurred"), and our messages are written to be shown.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class MultiagentError(RuntimeError):
    """An expected failure with a message fit to show a user as it is."""

    exit_code = 1


class UsageError(MultiagentError, ValueError):
    """Bad input: an unknown name, an out-of-range value, a malformed file."""

    exit_code = 2


class ConfigError(UsageError):
    """A configuration value that cannot be used, named with where it came from."""


class DamagedStoreError(UsageError):
    """A data file that cannot be read as what it should be (a corrupt or truncated database).

    Its message names the file and how to recover: a backup to restore, or
    ``multiagent persistence repair`` where the file holds only derived data.
    """


def did_you_mean(value: str, valid: Iterable[str], *, cutoff: float = 0.6) -> str:
    """Return ``" (did you mean 'x'?)"`` for the valid name nearest ``value``, else ``""``."""
    close = difflib.get_close_matches(value, list(valid), n=1, cutoff=cutoff)
    return f" (did you mean {close[0]!r}?)" if close else ""


class BudgetExceededError(MultiagentError):
    """The next model call would take the run past its budget (``daily``: past the project's
    daily cap, which a larger budget for the run does not lift)."""

    def __init__(
        self, message: str, *, spent_usd: float, budget_usd: float, daily: bool = False
    ) -> None:
        super().__init__(message)
        self.spent_usd = spent_usd
        self.budget_usd = budget_usd
        self.daily = daily


__all__ = [
    "BudgetExceededError",
    "ConfigError",
    "DamagedStoreError",
    "MultiagentError",
    "UsageError",
    "did_you_mean",
]
