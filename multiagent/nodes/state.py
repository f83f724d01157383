"""The state of the three workflows, and the payloads their fan-outs send.

State is a ``TypedDict``: the input keys first (what a caller gives), then what nodes write.
Lists that several nodes append to in parallel carry an ``operator.add`` reducer. Keys a run fills
in later are ``NotRequired`` (TypedDict fields take no defaults; nodes use ``.get``). Each input
needs only its subject (``task``, ``topic``, ``items``): the other input keys are ``NotRequired``
and the first node fills them from :mod:`multiagent.nodes.input_defaults`, so LangGraph Server
and Studio can start a run from ``{"task": ...}``, ``{"topic": ...}`` or ``{"items": [...]}``.
"""

from __future__ import annotations

import operator
from typing import Annotated, NotRequired

from langchain_core.messages import AnyMessage
from langgraph.graph.message import add_messages
from typing_extensions import TypedDict

from multiagent.nodes.usage import Usage

# -- orchestration -------------------------------------------------------------------------


class PlanStep(TypedDict):
    """One agent's part of the task."""

    agent: str
    subtask: str


class Approval(TypedDict):
    """A human's answer to the plan."""

    approved: bool
    feedback: str


class Contribution(TypedDict):
    """What one agent produced for its part of the task."""

    agent: str
    subtask: str
    text: str


class AgentTask(TypedDict):
    """The payload sent to one agent in the orchestration fan-out."""

    task: str
    agent: str
    subtask: str


class OrchestrationInput(TypedDict):
    """What starts an orchestration.

    ``team`` is who the planner may assign (default: the default team); with ``planner_picks``
    (default true) it chooses among them, else every member gets a part. ``require_approval``
    (default false) pauses the run for a human to review the plan.
    """

    task: str
    team: NotRequired[list[str]]
    planner_picks: NotRequired[bool]
    require_approval: NotRequired[bool]


class OrchestrationState(OrchestrationInput):
    """An orchestration run."""

    plan: NotRequired[list[PlanStep]]
    rationale: NotRequired[str]
    approval: NotRequired[Approval]
    contributions: Annotated[list[Contribution], operator.add]
    output: NotRequired[str]
    usage: Annotated[list[Usage], operator.add]


# -- meeting -------------------------------------------------------------------------------


class Utterance(TypedDict):
    """One participant's turn."""

    round: int
    agent: str
    text: str


class Assessment(TypedDict):
    """The moderator's view after a round; ``agreement`` is ``None`` when it gave no judgement."""

    round: int
    consensus: bool
    agreement: float | None
    open_questions: list[str]
    note: str


class MeetingInput(TypedDict):
    """What starts a meeting; default: the default participants, two rounds."""

    topic: str
    participants: NotRequired[list[str]]
    rounds: NotRequired[int]


class MeetingState(MeetingInput):
    """A meeting run; ``round`` and ``turn`` say who speaks next."""

    round: NotRequired[int]
    turn: NotRequired[int]
    transcript: Annotated[list[Utterance], operator.add]
    #: The transcript, judgements and summary as chat (``AIMessage`` named after the speaker).
    messages: Annotated[list[AnyMessage], add_messages]
    assessments: Annotated[list[Assessment], operator.add]
    consensus: NotRequired[bool]
    summary: NotRequired[str]
    usage: Annotated[list[Usage], operator.add]


# -- cross-validation ----------------------------------------------------------------------


class ValidationItem(TypedDict):
    """One text to validate, with the id results are reported under."""

    id: str
    text: str


class Verdict(TypedDict):
    """One validator's structured verdict on one text."""

    key: str
    validator: str
    passed: bool
    confidence: float
    issues: list[str]
    rationale: str
    cached: bool


class ValidatorFailure(TypedDict):
    """A validator that failed after the pipeline's retries; recorded, not fatal."""

    key: str
    validator: str
    error: str


class ItemResult(TypedDict):
    """The consensus on one item."""

    id: str
    status: str
    passed: bool
    approval: float
    threshold: float
    mean_confidence: float
    validators: int
    responded: int
    failed: list[str]
    issues: list[str]
    quorum: NotRequired[int]
    #: Every verdict came from the analysis cache (absent from results stored before it was kept).
    cached: NotRequired[bool]


class ValidatorTask(TypedDict):
    """The payload sent to one validator for one distinct text."""

    key: str
    text: str
    validator: str


class ValidationInput(TypedDict):
    """What starts a cross-validation: items, validators by name, the consensus threshold.

    An item may be a plain text (its id is then its 1-based position), in the schema too.
    Default validators: as many as the profile allows at most; default threshold: the profile's.
    """

    items: list[ValidationItem | str]
    validators: NotRequired[list[str]]
    threshold: NotRequired[float]


class ValidationState(ValidationInput):
    """A cross-validation run over one or many items."""

    verdicts: Annotated[list[Verdict], operator.add]
    failures: Annotated[list[ValidatorFailure], operator.add]
    results: NotRequired[list[ItemResult]]
    usage: Annotated[list[Usage], operator.add]
