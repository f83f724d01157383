"""What a workflow uses for an input key the caller left out.

LangGraph Server and Studio start runs from the minimal inputs ``{"task": ...}``,
``{"topic": ...}`` and ``{"items": [...]}``; the first node (or the router from ``START``) fills
the rest from here, and :mod:`multiagent.graphs.inputs` gives the CLI and the Python API the same
defaults. Choices are checked against the profile: a bad one raises
:class:`~multiagent.errors.UsageError` with one line naming it and the valid values.

An input that reaches a graph as JSON (LangGraph Server, Studio, ``invoke`` with a plain dict) has
not been through the CLI's checks, so the first node checks it with :func:`check_task`,
:func:`check_meeting` and :func:`check_items`: a value of the wrong type or out of range ends
the run with one line naming the input key, before any model is called.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from multiagent._inputs import check_text, item_id_problem
from multiagent.errors import UsageError, did_you_mean
from multiagent.nodes.agents import DEFAULT_PARTICIPANTS, DEFAULT_TEAM, VALIDATOR_ORDER, AgentKind
from multiagent.nodes.agents_file import AgentCatalog
from multiagent.nodes.state import ValidationItem, ValidationState
from multiagent.policies import Settings

#: Rounds of a meeting when the input names none.
DEFAULT_ROUNDS = 2
#: At most this many rounds in one meeting.
MAX_ROUNDS = 20
#: The hard bounds on validators per item, whatever the profile says.
VALIDATORS_RANGE = (1, 6)


def _defaults(agents: AgentCatalog, names: Sequence[str], *, what: str, option: str) -> list[str]:
    """The default ``names`` that are still workers (``agents.toml`` may make one a validator)."""
    workers = agents.of_kind("worker")
    chosen = [name for name in names if name in workers]
    if not chosen:
        raise UsageError(
            f"no agent of the default {what} ({', '.join(names)}) is a worker in "
            f"{agents.source}; name them with {option}; workers: {', '.join(workers) or 'none'}"
        )
    return chosen


def default_team(agents: AgentCatalog) -> list[str]:
    """The team the planner picks from when the input names none."""
    return _defaults(agents, DEFAULT_TEAM, what="team", option="--agents (input 'team')")


def default_participants(agents: AgentCatalog) -> list[str]:
    """Who speaks in a meeting when the input names nobody."""
    return _defaults(
        agents,
        DEFAULT_PARTICIPANTS,
        what="participants",
        option="--participants (input 'participants')",
    )


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


def _subject(value: object, *, key: str) -> str:
    """``value`` when it is non-empty text (the CLI's text rule); else one line naming ``key``."""
    if not isinstance(value, str) or not value.strip():
        raise UsageError(f"input {key!r} must be a non-empty text, got {value!r:.60}")
    return check_text(value, source=f"input {key!r}")


def _flag(state: Mapping[str, Any], key: str) -> None:
    if key in state and not isinstance(state[key], bool):
        raise UsageError(f"input {key!r} must be true or false, got {state[key]!r:.60}")


def _names(
    state: Mapping[str, Any], key: str, *, agents: AgentCatalog, kind: AgentKind
) -> list[str] | None:
    """The agent names under ``key``, each known and of ``kind``; ``None`` when left out."""
    given = state.get(key)
    if given is None or given == []:  # left out, or an empty list (a form's empty field)
        return None
    if not isinstance(given, list) or not all(isinstance(name, str) for name in given):
        raise UsageError(f"input {key!r} must be a list of agent names, got {given!r:.60}")
    valid = agents.of_kind(kind)
    for name in given:
        if name not in valid:
            raise UsageError(
                f"input {key!r} names unknown {kind} {name!r}{did_you_mean(name, valid)}; "
                f"valid: {', '.join(valid)}"
            )
        if given.count(name) > 1:
            raise UsageError(f"input {key!r} names {name!r} twice; name each agent once")
    return list(given)


def check_task(state: Mapping[str, Any], agents: AgentCatalog) -> list[str]:
    """Check an orchestration's input; return its team (the default when it names none)."""
    _subject(state.get("task"), key="task")
    _flag(state, "planner_picks")
    _flag(state, "require_approval")
    return _names(state, "team", agents=agents, kind="worker") or default_team(agents)


def check_meeting(state: Mapping[str, Any], agents: AgentCatalog) -> tuple[list[str], int]:
    """Check a meeting's input; return its participants and rounds (defaults filled in)."""
    _subject(state.get("topic"), key="topic")
    participants = _names(state, "participants", agents=agents, kind="worker")
    rounds = state.get("rounds", DEFAULT_ROUNDS)
    if isinstance(rounds, bool) or not isinstance(rounds, int) or not 1 <= rounds <= MAX_ROUNDS:
        raise UsageError(
            f"input 'rounds' must be a whole number from 1 to {MAX_ROUNDS}, got {rounds!r:.60}"
        )
    return participants or default_participants(agents), rounds


def check_items(state: Mapping[str, Any], agents: AgentCatalog) -> list[ValidationItem]:
    """Check a validation's input (items, validator names, threshold type); return its items."""
    given = state.get("items")
    if not isinstance(given, list) or not given:
        raise UsageError(
            'input \'items\' must be a non-empty list of texts or {"id", "text"} objects, '
            f"got {given!r:.60}"
        )
    seen: set[str] = set()
    for index, entry in enumerate(given, start=1):
        if isinstance(entry, dict):
            item_id, text = entry.get("id"), entry.get("text")
            if not isinstance(item_id, str | int) or isinstance(item_id, bool):
                raise UsageError(
                    f"item {index} of input 'items' needs an 'id' (text), got {item_id!r:.60}"
                )
        elif isinstance(entry, str):
            item_id, text = index, entry
        else:
            raise UsageError(
                f'item {index} of input \'items\' must be a text or an {{"id", "text"}} object, '
                f"got {entry!r:.60}"
            )
        if problem := item_id_problem(str(item_id)):
            raise UsageError(problem)
        if str(item_id) in seen:
            raise UsageError(f"item id {str(item_id)!r} appears twice; ids must be unique")
        seen.add(str(item_id))
        _subject(text, key=f"items[{index - 1}].text")
    _names(state, "validators", agents=agents, kind="validator")
    threshold = state.get("threshold")
    if threshold is not None and (
        isinstance(threshold, bool)
        or not isinstance(threshold, int | float)
        or not 0.0 < threshold <= 1.0
    ):
        raise UsageError(f"input 'threshold' must be a number in (0, 1], got {threshold!r:.60}")
    return validation_items(given)
