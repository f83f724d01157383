"""Cross-validation nodes: validators fanned out with ``Send``, and the deferred aggregator.

Each validator returns a structured verdict (pass or fail, confidence, issues) on one distinct
text; identical items are validated once and share the verdicts. A verdict is looked up in the
analysis cache first (:func:`cached_verdict` is the one place the cache plugs in). A validator
that fails after the pipeline's retries is recorded as a failure and the others decide, as long as
a quorum answered (the profile's ``validation.quorum``, by default its ``validators_min``): with
fewer answers the item is ``inconclusive``. A budget stop is not a validator failure and ends the
run (resumable). Each verdict and each item's result is also sent to the ``custom`` stream.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from typing import Any

from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage
from langgraph.runtime import Runtime, get_runtime
from langgraph.types import Command, Overwrite, Send
from pydantic import BaseModel, Field

from multiagent.models.accounting import worst_case_cost
from multiagent.models.analysis_cache import MISSING
from multiagent.models.structured import tool_of
from multiagent.models.tokens import prompt_tokens
from multiagent.nodes.agents import AgentSpec
from multiagent.nodes.calling import AgentCall
from multiagent.nodes.context import AnyContext, WorkflowContext, context_of
from multiagent.nodes.failures import describe_error, provider_errors
from multiagent.nodes.input_defaults import (
    check_items,
    threshold_of,
    validation_items,
    validators_of,
)
from multiagent.nodes.state import (
    ItemResult,
    ValidationItem,
    ValidationState,
    ValidatorFailure,
    ValidatorTask,
    Verdict,
)
from multiagent.nodes.stream_events import ItemDecided, VerdictGiven, agent_step, emit

#: The analysis-cache kind under which verdicts are kept.
VERDICT_KIND = "verdict"


class VerdictAnswer(BaseModel):
    """A validator's structured verdict."""

    passed: bool = Field(description="Whether the text meets the criterion.")
    confidence: float = Field(ge=0.0, le=1.0, description="Confidence in the verdict, 0 to 1.")
    issues: list[str] = Field(default_factory=list, description="Each problem found.")
    rationale: str = ""


def text_key(text: str) -> str:
    """A stable key for a text: identical items share it (and their verdicts)."""
    return hashlib.sha256(" ".join(text.split()).encode("utf-8")).hexdigest()[:24]


def distinct_texts(items: list[ValidationItem]) -> dict[str, str]:
    """Texts by key, each distinct text once, in first-seen order."""
    texts: dict[str, str] = {}
    for item in items:
        texts.setdefault(text_key(item["text"]), item["text"])
    return texts


def run_choices(state: ValidationState) -> tuple[list[str], float]:
    """The input's validators and threshold; for those it left out (LangGraph Server's minimal
    input), the profile's defaults from the run's context."""
    validators, threshold = state.get("validators"), state.get("threshold")
    if validators and threshold is not None:
        return list(validators), threshold
    context = context_of(get_runtime())
    return (
        validators_of(state, context.settings, context.agents),
        threshold_of(state, context.settings),
    )


def fan_out_validators(state: ValidationState) -> list[Send]:
    """One ``validate`` task per distinct text and validator; a bad input ends the run."""
    items = check_items(state, context_of(get_runtime()).agents)
    validators, _ = run_choices(state)
    return [
        Send("validate", ValidatorTask(key=key, text=text, validator=name))
        for key, text in distinct_texts(items).items()
        for name in validators
    ]


def failed_validators(values: Mapping[str, Any]) -> list[ValidatorTask]:
    """The validator tasks of a finished validation that failed after retries and gave no
    verdict since, each once, in the order they failed."""
    texts = distinct_texts(validation_items(values.get("items") or []))
    answered = {(v["key"], v["validator"]) for v in values.get("verdicts") or []}
    tasks: dict[tuple[str, str], ValidatorTask] = {}
    for failure in values.get("failures") or []:
        pair = (failure["key"], failure["validator"])
        if pair not in answered and failure["key"] in texts:
            tasks.setdefault(
                pair, ValidatorTask(key=pair[0], text=texts[pair[0]], validator=pair[1])
            )
    return list(tasks.values())


def retry_failed_validators(values: Mapping[str, Any]) -> Command[Any] | None:
    """What resumes a finished validation whose validators failed: only those run again.

    The verdicts given stay (none is paid for twice); the failures are cleared, so the retried
    validators' new answers, or new failures, are what the aggregator decides on. ``None`` when
    no validator failed: there is nothing to resume.
    """
    tasks = failed_validators(values)
    if not tasks:
        return None
    return Command(
        update={"failures": Overwrite([])}, goto=[Send("validate", task) for task in tasks]
    )


def cached_verdict(
    context: WorkflowContext,
    agent: AgentSpec,
    text: str,
    compute: Callable[[], dict[str, Any]],
) -> tuple[dict[str, Any], bool]:
    """Return a verdict from the analysis cache, computing and storing it on a miss.

    The key is the validator's full definition, its model and the text: a changed prompt or
    model never reuses an old verdict. Returns the verdict and whether it was a cache hit.
    """
    cache = context.analysis_cache
    if cache is None:
        return compute(), False
    content = {
        "validator": agent.name,
        "criteria": agent.criteria,
        "role": agent.role,
        "model": context.model_name(agent),
        "text": text,
    }
    found = cache.lookup(VERDICT_KIND, content)
    if found is not MISSING:
        return dict(found), True
    verdict = compute()
    cache.store(VERDICT_KIND, content, verdict)
    return verdict, False


def verdict_messages(agent: AgentSpec, text: str) -> list[BaseMessage]:
    """The prompt a validator's verdict call on ``text`` sends."""
    prompt = (
        f"{text}\n\n---\nReview the text above for {agent.criteria or agent.name} and "
        "return your verdict."
    )
    return [SystemMessage(agent.role), HumanMessage(prompt)]


def verdict_worst_case_usd(context: WorkflowContext, agent: AgentSpec, text: str) -> float:
    """The most ``agent``'s verdict call on ``text`` may cost: what the call reserves before it
    is sent (its prompt with the verdict's tool, with the accounting's margin, and the node's
    whole output allowance at the model's price; see
    :meth:`~multiagent.models.accounting.CallIdentity.worst_case_of`)."""
    tokens = prompt_tokens(verdict_messages(agent, text), tools=[tool_of(VerdictAnswer)])
    allowance = context.settings.profile.models.output_limit("validate")
    price = context.pipeline.price_of(context.model_name(agent))
    return worst_case_cost(price, tokens, max_output=allowance)


def validate(state: ValidatorTask, *, runtime: Runtime[AnyContext]) -> dict[str, object]:
    """One validator's verdict on one text; a provider failure is recorded, not raised."""
    context = context_of(runtime)
    agent = context.agents[state["validator"]]
    call = AgentCall(context, agent, node="validate")

    def compute() -> dict[str, Any]:
        messages = verdict_messages(agent, state["text"])
        return call.structured(messages, VerdictAnswer).model_dump()

    try:
        # the finish event names the error of a validator that did not answer (shown as ✗)
        with agent_step("validate", agent.name, call.usage):
            answer, cached = cached_verdict(context, agent, state["text"], compute)
            if cached:  # no call made: the run's usage counts the hit (as the metrics do)
                call.analysis_hit()
    except provider_errors() as exc:
        redact = context.settings.profile.features.pii_redaction
        failure = ValidatorFailure(
            key=state["key"], validator=agent.name, error=describe_error(exc, redact=redact)
        )
        return {"failures": [failure], "usage": [call.usage()]}
    checked = VerdictAnswer.model_validate(answer)
    verdict = Verdict(
        key=state["key"],
        validator=agent.name,
        passed=checked.passed,
        confidence=round(checked.confidence, 3),
        issues=list(checked.issues),
        rationale=checked.rationale,
        cached=cached,
    )
    emit(
        VerdictGiven(
            type="verdict",
            key=state["key"],
            validator=agent.name,
            passed=checked.passed,
            confidence=verdict["confidence"],
            cached=cached,
        )
    )
    return {"verdicts": [verdict], "usage": [call.usage()]}


def item_result(
    item: ValidationItem,
    *,
    verdicts: list[Verdict],
    failures: list[ValidatorFailure],
    validators: int,
    threshold: float,
    quorum: int = 1,
) -> ItemResult:
    """Consensus on one item: the share of responding validators that passed it.

    With fewer than ``quorum`` validators answering there is no consensus: ``inconclusive``.
    ``cached`` says every verdict of the item came from the analysis cache (no call made).
    """
    responded = len(verdicts)
    passes = sum(1 for v in verdicts if v["passed"])
    approval = passes / responded if responded else 0.0
    confidence = sum(v["confidence"] for v in verdicts) / responded if responded else 0.0
    quorum = max(1, quorum)
    if responded < quorum:
        status = "inconclusive"
    else:
        status = "passed" if approval >= threshold else "failed"
    issues = [
        f"{v['validator']}: {issue}" for v in verdicts if not v["passed"] for issue in v["issues"]
    ]
    # answered from the analysis cache: every verdict it rests on was cached, none failed
    cached = bool(verdicts) and not failures and all(v.get("cached") for v in verdicts)
    return ItemResult(
        id=item["id"],
        status=status,
        passed=status == "passed",
        approval=approval,  # as compared: rounded, 2 of 3 read 0.6667 and failed 0.6667
        threshold=threshold,
        mean_confidence=round(confidence, 4),
        validators=validators,
        responded=responded,
        failed=sorted(f["validator"] for f in failures),
        issues=issues,
        quorum=quorum,
        cached=cached,
    )


def aggregate(
    state: ValidationState, *, runtime: Runtime[WorkflowContext] | None = None
) -> dict[str, object]:
    """Deferred: once every validator has answered, compute each item's consensus.

    The quorum is the run profile's (:meth:`~multiagent.policies.profiles.ValidationConfig.
    quorum_for`); without a run context (a direct call) every validator must answer. Verdicts
    and failures are grouped by text key in one pass, and each item's key is computed once, so
    the step is linear in the number of items and verdicts (not their product).
    """
    chosen, threshold = run_choices(state)
    validators = len(chosen)
    quorum = (
        validators
        if runtime is None
        else context_of(runtime).settings.profile.validation.quorum_for(validators)
    )
    verdicts: dict[str, list[Verdict]] = {}
    for verdict in state["verdicts"]:
        verdicts.setdefault(verdict["key"], []).append(verdict)
    failures: dict[str, list[ValidatorFailure]] = {}
    for failure in state["failures"]:
        failures.setdefault(failure["key"], []).append(failure)
    results = []
    for item in validation_items(state["items"]):
        key = text_key(item["text"])
        results.append(
            item_result(
                item,
                verdicts=verdicts.get(key, []),
                failures=failures.get(key, []),
                validators=validators,
                threshold=threshold,
                quorum=quorum,
            )
        )
        decided = results[-1]
        emit(
            ItemDecided(
                type="item_result",
                id=decided["id"],
                status=decided["status"],
                approval=decided["approval"],
                responded=decided["responded"],
                quorum=quorum,
            )
        )
    return {"results": results}
