"""Meeting nodes: participants speak in turn, the moderator judges each round, a summary closes.

Each participant sees the transcript so far. After every round the moderator returns a structured
assessment; the meeting ends early when it finds consensus (its ``consensus`` flag and an
agreement at or above the profile's consensus threshold), else after the set rounds. A moderator
that gives no valid judgement by any step of the structured-output ladder does not fail the
meeting: that round is recorded as no consensus with its agreement unknown (``None``). The summary
is streamed (the seed's ``_generate_meeting_summary``): decisions, action items and dissent.

Every turn and every judgement is also a chat message in ``messages`` (an ``AIMessage`` named after
who spoke), so LangGraph Studio's chat view shows the meeting; the judgement goes to the ``custom``
stream as well, so a terminal prints it as it happens.
"""

from __future__ import annotations

from typing import Literal

from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from langgraph.runtime import Runtime
from pydantic import BaseModel, Field

from multiagent.nodes.calling import AgentCall
from multiagent.nodes.context import AnyContext, context_of
from multiagent.nodes.failures import StructuredOutputError
from multiagent.nodes.input_defaults import check_meeting
from multiagent.nodes.state import Assessment, MeetingState, Utterance
from multiagent.nodes.stream_events import ModeratorJudgement, agent_step, emit
from multiagent.nodes.worker import agent_answer

MODERATOR = "moderator"
SECRETARY = "secretary"


class ModeratorAnswer(BaseModel):
    """The moderator's structured assessment of a round."""

    consensus: bool = Field(description="Whether the participants have reached consensus.")
    agreement: float = Field(ge=0.0, le=1.0, description="How much they agree, 0 to 1.")
    open_questions: list[str] = Field(default_factory=list)
    note: str = ""


def render_transcript(transcript: list[Utterance]) -> str:
    """The transcript as prompt text, one turn per paragraph."""
    if not transcript:
        return "(nobody has spoken yet)"
    return "\n\n".join(f"[round {u['round']}, {u['agent']}] {u['text']}" for u in transcript)


def speak(state: MeetingState, *, runtime: Runtime[AnyContext]) -> dict[str, object]:
    """The next participant speaks, having read the transcript so far."""
    context = context_of(runtime)
    current, turn = state.get("round", 1), state.get("turn", 0)
    participants, rounds = check_meeting(state, context.agents)
    name = participants[turn]
    prompt = (
        f"{state['topic']}\n\nThis is a meeting, round {current} of {rounds}. Speak as "
        f"the {name}: respond to what has been said, add what your role sees, and say where you "
        f"agree or disagree.\n\nTranscript so far:\n{render_transcript(state['transcript'])}"
    )
    answer, usage = agent_answer(
        context, context.agents[name], node="speak", prompt=prompt, workflow="meeting"
    )
    return {
        "transcript": [Utterance(round=current, agent=name, text=answer)],
        "messages": [AIMessage(content=answer, name=name)],
        "round": current,
        "turn": turn + 1,
        # an input without them (LangGraph Server's minimal one) gets the defaults written once
        "participants": participants,
        "rounds": rounds,
        "usage": [usage],
    }


def route_after_speak(state: MeetingState) -> Literal["speak", "moderate"]:
    """The next participant, or the moderator once everyone has spoken this round."""
    return "speak" if state.get("turn", 0) < len(state["participants"]) else "moderate"


def moderate(state: MeetingState, *, runtime: Runtime[AnyContext]) -> dict[str, object]:
    """Judge the round: consensus, agreement, open questions."""
    context = context_of(runtime)
    agent = context.agents[MODERATOR]
    current = state.get("round", 1)
    prompt = (
        f"{state['topic']}\n\nRound {current} of {state['rounds']} has ended. Judge whether the "
        f"participants agree.\n\nTranscript:\n{render_transcript(state['transcript'])}"
    )
    call = AgentCall(context, agent, node="moderate")
    try:
        with agent_step("moderate", agent.name, call.usage):
            messages = [SystemMessage(agent.role), HumanMessage(prompt)]
            answer = call.structured(messages, ModeratorAnswer)
    except StructuredOutputError as exc:
        # a judge that gave no usable judgement is not a failed meeting: the round stands
        # without consensus, its agreement unknown, and the meeting goes on
        assessment = Assessment(
            round=current,
            consensus=False,
            agreement=None,
            open_questions=[],
            note=f"the moderator gave no valid judgement ({exc})",
        )
    else:
        threshold = context.settings.profile.validation.consensus_threshold
        assessment = Assessment(
            round=current,
            consensus=answer.consensus and answer.agreement >= threshold,
            agreement=round(answer.agreement, 3),
            open_questions=list(answer.open_questions),
            note=answer.note,
        )
    emit(ModeratorJudgement(type="moderator", **assessment))
    return {
        "assessments": [assessment],
        "messages": [AIMessage(content=judgement_text(assessment), name=MODERATOR)],
        "consensus": assessment["consensus"],
        "round": current + 1,
        "turn": 0,
        "usage": [call.usage()],
    }


def judgement_text(assessment: Assessment) -> str:
    """The moderator's judgement of a round as one line of chat."""
    verdict = "consensus" if assessment["consensus"] else "no consensus yet"
    text = f"Round {assessment['round']}: {verdict} (agreement {agreement_text(assessment)})."
    if assessment["open_questions"]:
        text += " Open: " + "; ".join(assessment["open_questions"]) + "."
    if assessment["note"]:
        text += f" {assessment['note']}"
    return text


def agreement_text(assessment: Assessment) -> str:
    """The round's agreement as two decimals, or ``unknown`` when the moderator gave none."""
    agreement = assessment["agreement"]
    return "unknown" if agreement is None else f"{agreement:.2f}"


def route_after_moderate(state: MeetingState) -> Literal["speak", "summarize"]:
    """Another round, or the summary after consensus or the last round."""
    if state.get("consensus", False) or state.get("round", 1) > state["rounds"]:
        return "summarize"
    return "speak"


def summarize(state: MeetingState, *, runtime: Runtime[AnyContext]) -> dict[str, object]:
    """Write the meeting summary: decisions, action items, dissent."""
    context = context_of(runtime)
    agent = context.agents[SECRETARY]
    held = max(u["round"] for u in state["transcript"]) if state["transcript"] else 0
    outcome = "consensus was reached" if state.get("consensus") else "no consensus was reached"
    notes = "\n".join(
        f"- round {a['round']}: agreement {agreement_text(a)}; open: "
        f"{'; '.join(a['open_questions']) or 'nothing'}"
        for a in state["assessments"]
    )
    prompt = (
        f"{state['topic']}\n\nParticipants: {', '.join(state['participants'])}. Rounds held: "
        f"{held} of {state['rounds']}; {outcome}.\n\nTranscript:\n"
        f"{render_transcript(state['transcript'])}\n\nAfter each round:\n{notes or '- none'}\n\n"
        "Write the summary with three parts: Decisions, Action items, Dissent."
    )
    call = AgentCall(context, agent, node="summarize")
    with agent_step("summarize", agent.name, call.usage):
        summary = call.text([SystemMessage(agent.role), HumanMessage(prompt)])
    return {
        "summary": summary,
        "messages": [AIMessage(content=summary, name=SECRETARY)],
        "usage": [call.usage()],
    }
