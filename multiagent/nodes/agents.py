"""Agents: a name, a role (the system prompt), a model tier, optional tools, and memory access.

The built-in agents cover the common roles. Their system prompts name the role in plain words, so
a real model knows what to do and the simulated provider (which shapes its text by the role the
system prompt names, see :mod:`multiagent.sim.text`) answers in character. Users add or
override agents in ``agents.toml`` (:mod:`multiagent.nodes.agents_file`).
"""

from __future__ import annotations

from typing import Literal

from langchain_core.tools import BaseTool
from pydantic import BaseModel, ConfigDict, Field

from multiagent.policies import Tier

AgentKind = Literal["worker", "moderator", "validator"]
AGENT_KINDS: tuple[AgentKind, ...] = ("worker", "moderator", "validator")


class AgentSpec(BaseModel):
    """One agent as a workflow uses it.

    Attributes:
        name: Unique name; what ``--agents`` and ``--participants`` refer to.
        role: The system prompt; it should name the role ("You are the critic ...").
        tier: Which of the profile's model tiers the agent calls.
        kind: ``worker`` (orchestration and meetings), ``moderator`` or ``validator``.
        description: One line for listings.
        criteria: For validators, what they check.
        tools: Tools the agent may call: LangChain tools, built-in short names
            (:data:`multiagent.nodes.tools.TOOLS`) or import paths ``module:attribute``
            (see :func:`multiagent.nodes.tools.resolve_tool`).
        memory: Whether the agent recalls and records long-term memory.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=r"^[a-z][a-z0-9_\-]{0,39}$")
    role: str = Field(min_length=1)
    tier: Tier = "standard"
    kind: AgentKind = "worker"
    description: str = ""
    criteria: str = ""
    tools: tuple[str | BaseTool, ...] = ()
    memory: bool = True


def _worker(name: str, description: str, role: str, *, tier: Tier = "standard") -> AgentSpec:
    return AgentSpec(name=name, role=role, tier=tier, kind="worker", description=description)


def _validator(name: str, criteria: str) -> AgentSpec:
    return AgentSpec(
        name=name,
        kind="validator",
        tier="fast",
        description=f"validator: {criteria}",
        criteria=criteria,
        memory=False,
        role=(
            f"You are a validator. Review the text for {criteria} and give a verdict: pass or "
            "fail, your confidence from 0 to 1, and every issue you found. Judge only this "
            "criterion; be specific about where the text falls short."
        ),
    )


BUILTIN_AGENTS: tuple[AgentSpec, ...] = (
    _worker(
        "researcher",
        "gathers facts and sources",
        "You are the researcher of a small expert team. Find the relevant facts, name your "
        "sources and say how strong the evidence is. Do not recommend; report.",
    ),
    _worker(
        "analyst",
        "breaks the problem down and weighs trade-offs",
        "You are the analyst of a small expert team. Break the problem into its drivers, "
        "quantify where you can and make the trade-offs explicit.",
    ),
    _worker(
        "critic",
        "looks for risks, gaps and weak assumptions",
        "You are the critic of a small expert team. Find the risks, the weak assumptions and "
        "what could go wrong; be concrete and fair.",
    ),
    _worker(
        "writer",
        "turns the work into clear prose",
        "You are the writer of a small expert team. Draft a clear, well-structured text that "
        "a non-specialist can follow.",
    ),
    AgentSpec(
        name="planner",
        kind="moderator",
        tier="standard",
        memory=False,
        description="splits a task and assigns the parts to agents",
        role=(
            "You are the planner. Split the task into focused subtasks and assign each to the "
            "team member whose role fits it best. Use only the members offered."
        ),
    ),
    AgentSpec(
        name="synthesizer",
        kind="moderator",
        tier="premium",
        memory=False,
        description="combines the contributions into the collaborative output",
        role=(
            "You are the synthesizer. Combine the team's contributions into one collaborative "
            "output: keep what they agree on, resolve or flag what they disagree on, and end "
            "with a clear recommendation."
        ),
    ),
    AgentSpec(
        name="moderator",
        kind="moderator",
        tier="standard",
        memory=False,
        description="chairs meetings and judges consensus",
        role=(
            "You are the moderator of a meeting. After each round, judge whether the "
            "participants have reached consensus, how much they agree, and what is still open."
        ),
    ),
    AgentSpec(
        name="secretary",
        kind="moderator",
        tier="premium",
        memory=False,
        description="writes the meeting summary",
        role=(
            "You write the meeting summary (the minutes): the decisions taken, the action items "
            "with owners, and any dissent that was voiced. Be brief and exact."
        ),
    ),
    _validator("factual_accuracy", "factual accuracy: claims that are wrong or unsupported"),
    _validator("logical_consistency", "logical consistency: contradictions and non sequiturs"),
    _validator("completeness", "completeness: what the text leaves out that it should cover"),
    _validator("safety", "safety: harmful, biased or privacy-invading content"),
    _validator("clarity", "clarity: ambiguity, jargon and structure"),
    _validator("source_quality", "source quality: whether claims rest on credible sources"),
)

#: The team an orchestration offers the planner when ``--agents`` is not given.
DEFAULT_TEAM: tuple[str, ...] = ("researcher", "analyst", "critic", "writer")
#: Who speaks in a meeting when ``--participants`` is not given.
DEFAULT_PARTICIPANTS: tuple[str, ...] = ("researcher", "analyst", "critic")
#: Validators in the order a cross-validation takes them.
VALIDATOR_ORDER: tuple[str, ...] = (
    "factual_accuracy",
    "logical_consistency",
    "completeness",
    "safety",
    "clarity",
    "source_quality",
)
