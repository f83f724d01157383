"""The planner splits a task and assigns parts to agents; a human may review the plan first.

The plan comes back as structured output (:mod:`multiagent.models.structured`: a forced tool call
whose schema lists the team as an enum, so the model can only name agents that exist, else the
provider's JSON modes, JSON in text, one repair round). A model that gives no valid plan by any
of them does not stop the run: the task goes to the whole team, each member taking it from its
own role (:func:`default_plan`), and the rationale says so. With ``require_approval`` the
``review`` node pauses the run with ``interrupt()``; ``Command(resume=...)`` continues it with the
human's answer (``True``/``False`` or ``{"approved": ..., "feedback": ...}``).
"""

from __future__ import annotations

from typing import Any, Literal

from langchain_core.messages import HumanMessage, SystemMessage
from langgraph.runtime import Runtime
from langgraph.types import Send, interrupt
from pydantic import BaseModel, Field

from multiagent.nodes.calling import AgentCall
from multiagent.nodes.context import AnyContext, WorkflowContext, context_of
from multiagent.nodes.failures import StructuredOutputError
from multiagent.nodes.input_defaults import check_task
from multiagent.nodes.state import AgentTask, Approval, OrchestrationState, PlanStep
from multiagent.nodes.stream_events import agent_step

PLANNER = "planner"


class PlannedStep(BaseModel):
    """One step of the planner's answer."""

    agent: str = Field(description="The team member who does this part.")
    subtask: str = Field(min_length=1, description="What that member should do, in one line.")


class PlanAnswer(BaseModel):
    """The planner's structured answer."""

    steps: list[PlannedStep] = Field(min_length=1)
    rationale: str = ""


def plan_tool(team: list[str]) -> dict[str, Any]:
    """The tool definition the planner must call, with the team as an enum."""
    step = {
        "type": "object",
        "properties": {
            "agent": {"type": "string", "enum": list(team), "description": "Team member."},
            "subtask": {"type": "string", "description": "Their part of the task, one line."},
        },
        "required": ["agent", "subtask"],
    }
    return {
        "type": "function",
        "function": {
            "name": "submit_plan",
            "description": "Submit the plan: one step per team member you involve.",
            "parameters": {
                "type": "object",
                "properties": {
                    "steps": {
                        "type": "array",
                        "items": step,
                        "minItems": min(2, len(team)),
                        "maxItems": len(team),
                    },
                    "rationale": {"type": "string", "description": "Why this split."},
                },
                "required": ["steps", "rationale"],
            },
        },
    }


def merge_steps(answer: PlanAnswer, *, task: str, team: list[str], pick: bool) -> list[PlanStep]:
    """One step per agent, in team order; unknown agents dropped, repeated ones merged (a name
    matches whatever its case and surrounding spaces).

    With ``pick`` false every team member gets a step (the task itself when the planner left
    them out); with ``pick`` true the planner's choice stands, and at least one agent works.
    """
    # a model answering in text (no enum to hold it) may write "Analyst" or " analyst"
    names = {name.casefold(): name for name in team}
    parts: dict[str, list[str]] = {}
    for step in answer.steps:
        name = names.get(step.agent.strip().casefold())
        if name is not None and step.subtask.strip():
            parts.setdefault(name, []).append(step.subtask.strip())
    if not pick:
        for name in team:
            parts.setdefault(name, [task])
    if not parts:
        parts[team[0]] = [task]
    return [PlanStep(agent=name, subtask="; ".join(parts[name])) for name in team if name in parts]


def plan(state: OrchestrationState, *, runtime: Runtime[AnyContext]) -> dict[str, object]:
    """Split the task among the team."""
    context = context_of(runtime)
    planner = context.agents[PLANNER]
    team = check_task(state, context.agents)
    roster = "\n".join(
        f"- {name}: {context.agents[name].description or context.agents[name].role[:120]}"
        for name in team
    )
    prompt = (
        f"{state['task']}\n\nTeam members you may assign:\n{roster}\n\n"
        "Give each member you involve one focused subtask."
    )
    call = AgentCall(context, planner, node="plan")
    try:
        # the finish event names StructuredOutputError when the default split follows
        with agent_step("plan", planner.name, call.usage):
            answer = call.structured(
                [SystemMessage(planner.role), HumanMessage(prompt)],
                PlanAnswer,
                tool=plan_tool(team),
            )
    except StructuredOutputError as exc:
        return {
            "plan": default_plan(state["task"], team=team, context=context),
            "rationale": f"default split: the planner gave no valid plan ({exc})",
            "team": team,
            "usage": [call.usage()],
        }
    steps = merge_steps(
        answer, task=state["task"], team=team, pick=bool(state.get("planner_picks", True))
    )
    return {"plan": steps, "rationale": answer.rationale, "team": team, "usage": [call.usage()]}


def default_plan(task: str, *, team: list[str], context: WorkflowContext) -> list[PlanStep]:
    """The plan when the planner gives none: every member takes the task from its own role."""
    steps = []
    for name in team:
        agent = context.agents[name]
        angle = agent.description or agent.role.split(".")[0]
        steps.append(PlanStep(agent=name, subtask=f"{task} (your angle: {angle})"))
    return steps


def _approves(value: Any) -> bool:
    """Only ``true`` or a yes approves: a JSON client's ``"false"`` must not (``bool`` says yes)."""
    if isinstance(value, bool):
        return value
    return isinstance(value, str) and value.strip().lower() in ("y", "yes", "approve", "approved")


def _decision(value: Any) -> Approval:
    if isinstance(value, dict):
        return Approval(
            approved=_approves(value.get("approved", False)),
            feedback=str(value.get("feedback") or ""),
        )
    if isinstance(value, bool | str):
        return Approval(approved=_approves(value), feedback="")
    return Approval(approved=False, feedback=f"unrecognised answer {value!r}")


def review(state: OrchestrationState) -> dict[str, object]:
    """Wait for a human to approve the plan (``interrupt``); record the answer."""
    answer = interrupt(
        {
            "kind": "plan_approval",
            "task": state["task"],
            "plan": state.get("plan", []),
            "rationale": state.get("rationale", ""),
        }
    )
    return {"approval": _decision(answer)}


def _sends(state: OrchestrationState) -> list[Send]:
    feedback = state.get("approval", Approval(approved=True, feedback=""))["feedback"]
    note = f" (reviewer's note: {feedback})" if feedback else ""
    return [
        Send(
            "work",
            AgentTask(task=state["task"], agent=step["agent"], subtask=step["subtask"] + note),
        )
        for step in state.get("plan", [])
    ]


def route_after_plan(state: OrchestrationState) -> Literal["review"] | list[Send]:
    """To the human review when one is required, else straight to the agents."""
    if state.get("require_approval", False):
        return "review"
    return _sends(state)


def route_after_review(state: OrchestrationState) -> Literal["__end__"] | list[Send]:
    """To the agents when the plan was approved; a rejected plan ends the run."""
    approval = state.get("approval")
    if approval is None or not approval["approved"]:
        return "__end__"
    return _sends(state)
