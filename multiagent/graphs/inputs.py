"""Check what a user asks for and turn it into a workflow's input, before anything is stored.

Every function raises :class:`~multiagent.errors.UsageError` with one line naming the bad value
and the valid ones; nothing is opened or written until the input is known to be good.
"""

from __future__ import annotations

from collections.abc import Sequence

from multiagent._inputs import check_text, item_id_problem
from multiagent.errors import UsageError
from multiagent.nodes.agents_file import AgentCatalog
from multiagent.nodes.input_defaults import (
    DEFAULT_ROUNDS,
    MAX_ROUNDS,
    VALIDATORS_RANGE,
    check_threshold,
    choose_validators,
    default_participants,
    default_team,
    validation_items,
)
from multiagent.nodes.state import MeetingInput, OrchestrationInput, ValidationInput, ValidationItem
from multiagent.policies import Settings
from multiagent.safety import redact_input, redact_text

__all__ = [
    "MAX_ROUNDS",
    "VALIDATORS_RANGE",
    "check_threshold",
    "choose_validators",
    "meeting_input",
    "orchestration_input",
    "validation_input",
]


def _text(value: str | None, *, what: str) -> str:
    text = (value or "").strip()
    if not text:
        raise UsageError(f"the {what} is empty; give a non-empty {what}")
    return check_text(text, source=f"the {what}")  # the command line's rule, for the API too


def orchestration_input(
    task: str | None,
    *,
    agents: AgentCatalog,
    team: Sequence[str] | None = None,
    require_approval: bool = False,
) -> OrchestrationInput:
    """The input of an orchestration; without ``team`` the planner picks from the default team."""
    text = _text(task, what="task")
    if team is None:
        chosen = tuple(default_team(agents))
        picks = True
    else:
        chosen = agents.team(team, kind="worker", option="--agents")
        picks = False
    return OrchestrationInput(
        task=text, team=list(chosen), planner_picks=picks, require_approval=require_approval
    )


def meeting_input(
    topic: str | None,
    *,
    agents: AgentCatalog,
    participants: Sequence[str] | None = None,
    rounds: int = DEFAULT_ROUNDS,
) -> MeetingInput:
    """The input of a meeting."""
    text = _text(topic, what="topic")
    if not 1 <= rounds <= MAX_ROUNDS:
        raise UsageError(f"--rounds must be between 1 and {MAX_ROUNDS}, got {rounds}")
    names = (
        tuple(default_participants(agents))
        if participants is None
        else agents.team(participants, kind="worker", option="--participants")
    )
    return MeetingInput(topic=text, participants=list(names), rounds=rounds)


def validation_input(
    items: Sequence[str | ValidationItem],
    *,
    settings: Settings,
    agents: AgentCatalog,
    validators: int | Sequence[str] | None = None,
    threshold: float | None = None,
) -> ValidationInput:
    """The input of a cross-validation over ``items`` (texts, or ``{"id", "text"}`` items).

    ``validators`` is a count (checked against the profile's bounds) or a list of names.
    """
    checked: list[ValidationItem] = []
    seen: set[str] = set()
    for entry in validation_items(items):
        _text(entry["text"], what=f"text of item {entry['id']}")
        if problem := item_id_problem(entry["id"]):
            raise UsageError(problem)
        if entry["id"] in seen:
            raise UsageError(f"item id {entry['id']!r} appears twice; ids must be unique")
        seen.add(entry["id"])
        checked.append(entry)
    if not checked:
        raise UsageError("nothing to validate; give at least one text")
    if validators is None or isinstance(validators, int):
        names = choose_validators(settings, agents, count=validators)
    else:
        names = list(agents.team(validators, kind="validator", option="--validators"))
    redacting = settings.profile.features.pii_redaction
    if redacting:
        _unique_once_redacted(checked)
    return ValidationInput(
        # batch manifests and queue entries are made from this: redact before they are stored
        items=[*redact_input(checked, enabled=redacting)],
        validators=names,
        threshold=check_threshold(settings, threshold),
    )


def _unique_once_redacted(items: Sequence[ValidationItem]) -> None:
    """Distinct ids that redaction makes equal (two e-mail addresses, both
    ``[REDACTED_EMAIL]``) would key two results alike: refused, naming the items by position
    (the ids are what may not be shown)."""
    first: dict[str, int] = {}
    for number, item in enumerate(items, start=1):
        stored = redact_text(item["id"]).text
        if stored in first:
            raise UsageError(
                f"items {first[stored]} and {number} have ids that both read {stored!r} once "
                "personal data is redacted (the profile redacts it); key the items by ids "
                "without personal data, or leave 'id' out"
            )
        first[stored] = number
