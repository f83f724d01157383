"""What a workflow uses for an input key the caller left out.

LangGraph Server and Studio start runs from the minimal inputs ``{"task": ...}``,
``{"topic": ...}`` and ``{"items": [...]}``; the first node (or the router from ``START``) fills
the rest from here, and :mod:`multiagent.graphs.inputs` gives the CLI and the Python API the same
defaults. Choices are checked against the profile: a bad one raises
:class:`~multiagent.errors.UsageError` with one line naming it and the valid values.
"""

from __future__ import annotations

from collections.abc import Sequence

from multiagent.errors import UsageError
from multiagent.nodes.agents import DEFAULT_PARTICIPANTS, DEFAULT_TEAM, VALIDATOR_ORDER
from multiagent.nodes.agents_file import AgentCatalog
from multiagent.nodes.state import ValidationItem, ValidationState
from multiagent.policies import Settings

#: Rounds of a meeting when the input names none.
DEFAULT_ROUNDS = 2
#: The hard bounds on validators per item, whatever the profile says.
VALIDATORS_RANGE = (1, 6)


def default_team(agents: AgentCatalog) -> list[str]:
    """The team the planner picks from when the input names none."""
    return [name for name in DEFAULT_TEAM if name in agents]


def default_participants(agents: AgentCatalog) -> list[str]:
    """Who speaks in a meeting when the input names nobody."""
    return [name for name in DEFAULT_PARTICIPANTS if name in agents]


def choose_validators(
    settings: Settings, agents: AgentCatalog, *, count: int | None = None
) -> list[str]:
    """``count`` validators (default: the profile's maximum), checked against the profile."""
    low, high = VALIDATORS_RANGE
    bounds = settings.profile.validation
    if count is not None and not low <= count <= high:
        raise UsageError(f"--validators must be between {low} and {high}, got {count}")
    wanted = bounds.validators_max if count is None else count
    if not bounds.validators_min <= wanted <= bounds.validators_max:
        raise UsageError(
            f"--validators {wanted} is outside what profile {settings.env} (policy "
            f"{settings.policy}) allows: {bounds.validators_min} to {bounds.validators_max}"
        )
    available = [name for name in VALIDATOR_ORDER if name in agents.of_kind("validator")]
    available += [name for name in agents.of_kind("validator") if name not in available]
    if wanted > len(available):
        raise UsageError(
            f"--validators {wanted} asks for more validators than are defined ({len(available)})"
        )
    return available[:wanted]


def check_threshold(settings: Settings, threshold: float | None) -> float:
    """The consensus threshold: given, or the profile's; it must lie in (0, 1]."""
    value = settings.profile.validation.consensus_threshold if threshold is None else threshold
    if not 0.0 < value <= 1.0:
        raise UsageError(f"--threshold must be in (0, 1], got {value}")
    return value


def validation_items(items: Sequence[str | ValidationItem]) -> list[ValidationItem]:
    """Items as ``{"id", "text"}``: a plain text gets its 1-based position as id."""
    return [
        ValidationItem(id=str(index), text=item)
        if isinstance(item, str)
        else ValidationItem(id=str(item["id"]), text=str(item["text"]))
        for index, item in enumerate(items, start=1)
    ]


def validators_of(state: ValidationState, settings: Settings, agents: AgentCatalog) -> list[str]:
    """The run's validators: the input's, else the profile's default choice."""
    given = state.get("validators")
    return list(given) if given else choose_validators(settings, agents)


def threshold_of(state: ValidationState, settings: Settings) -> float:
    """The run's consensus threshold: the input's, else the profile's."""
    return check_threshold(settings, state.get("threshold"))
