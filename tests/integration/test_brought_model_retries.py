"""A brought ``ChatOpenAI`` against the simulator on loopback, counted by the requests the
server saw: each attempt of the pipeline's retry loop is one request (the client's own retries
are off, inside ``.bind`` and ``.with_fallbacks`` too), and an answer from a fallback is
recorded and priced as the model that gave it, the primary's failure as a failed call of its
own."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx2
import pytest
from langchain_core.messages import BaseMessage
from langchain_openai import ChatOpenAI
from pydantic import SecretStr

from multiagent._metrics import get_metrics
from multiagent.models.pipeline import ModelPipeline, RunLedger
from multiagent.models.retry import RetryPolicy
from multiagent.policies import Settings, load_settings
from multiagent.sim import SimServerConfig, run_sim_server

#: Every request asks for more than a minute's tokens: a 429 at once, naming no wait (no
#: limit headers either, so the limiter does not learn a 10 tokens/min pace from it).
ALWAYS_429 = SimServerConfig(tpm=10, limit_headers=False)
ALWAYS_5XX = SimServerConfig(error_rate=1.0)
#: Three attempts with next to no backoff: the counts, not the waits, are under test.
THREE_QUICK = RetryPolicy(attempts=3, base_s=0.001, cap_s=0.001)


@pytest.fixture
def settings() -> Settings:
    return load_settings(overrides={"cache.completion_enabled": False})


def totals(url: str) -> dict[str, int]:
    """What the simulator at ``url`` saw, over all its phases."""
    found: dict[str, int] = httpx2.get(url.removesuffix("/v1") + "/sim/stats").json()["totals"]
    return found


def chat_openai(name: str, url: str) -> ChatOpenAI:
    """A ``ChatOpenAI`` as users build it: the SDK's own retries (2) left as they are."""
    return ChatOpenAI(model=name, base_url=url, api_key=SecretStr("sk-test"), stream_usage=True)


WRAPS: dict[str, Callable[[ChatOpenAI], Any]] = {
    "bare": lambda model: model,
    "bind": lambda model: model.bind(temperature=0),
}


@pytest.mark.parametrize("wrap", list(WRAPS))
@pytest.mark.parametrize(
    ("fault", "counted", "kind"),
    [(ALWAYS_429, "rate_limited", "rate_limit"), (ALWAYS_5XX, "server_errors", "server")],
    ids=["429", "5xx"],
)
def test_each_attempt_of_a_failing_call_is_one_request(
    settings: Settings, wrap: str, fault: SimServerConfig, counted: str, kind: str
) -> None:
    with run_sim_server(fault) as url:
        brought = WRAPS[wrap](chat_openai("gpt-4o-mini", url))
        pipeline = ModelPipeline(settings, model=brought, retry=THREE_QUICK)
        ledger = RunLedger()
        chat = pipeline.model_for("fast", agent="writer", ledger=ledger)
        with pytest.raises(Exception) as caught:
            chat.invoke("Say something")
        seen = totals(url)
    # three attempts, three requests: not 3 × (the SDK's 2 retries + 1) = 9, each unseen by
    # the limiter but the last
    assert (seen["attempts"], seen[counted]) == (3, 3), caught.value
    (call,) = ledger.calls
    assert (call.model, call.outcome, call.error, call.attempts) == (
        "gpt-4o-mini",
        "error",
        kind,
        3,
    )


def cost_of(model: str, tokens_in: int, tokens_out: int) -> float:
    return load_settings().profile.require_price(model).cost(tokens_in, tokens_out)


async def answer(chat: Any, how: str) -> BaseMessage:
    """One call of ``chat`` made as ``how`` says; a stream's chunks added up."""
    if how == "invoke":
        message: BaseMessage = chat.invoke("Say something")
        return message
    if how == "ainvoke":
        message = await chat.ainvoke("Say something")
        return message
    chunks = list(chat.stream("Say something")) if how == "stream" else []
    if how == "astream":
        chunks = [chunk async for chunk in chat.astream("Say something")]
    whole = chunks[0]
    for chunk in chunks[1:]:
        whole = whole + chunk
    return whole  # type: ignore[no-any-return]


@pytest.mark.parametrize("how", ["invoke", "ainvoke", "stream", "astream"])
@pytest.mark.parametrize("fault", [ALWAYS_429, ALWAYS_5XX], ids=["429", "5xx"])
async def test_a_fallback_answer_is_recorded_and_priced_as_the_model_that_gave_it(
    settings: Settings, how: str, fault: SimServerConfig
) -> None:
    metrics = get_metrics()
    before = metrics.counter("model_cost_usd_total", labels={"model": "gpt-4o"})
    with run_sim_server(fault) as down, run_sim_server() as up:
        primary = chat_openai("gpt-4o-mini", down)
        brought = primary.with_fallbacks([chat_openai("gpt-4o", up)])
        pipeline = ModelPipeline(settings, model=brought, retry=THREE_QUICK)
        ledger = RunLedger()
        chat = pipeline.model_for("fast", agent="writer", ledger=ledger)
        message = await answer(chat, how)
        failed, served = totals(down), totals(up)
    assert message.text
    # the primary was asked once (its SDK did not retry), then the fallback once
    assert (failed["attempts"], served["attempts"], served["successes"]) == (1, 1, 1)
    tried, answered = ledger.calls
    assert (tried.model, tried.outcome, tried.cost_usd) == ("gpt-4o-mini", "error", 0.0)
    assert (tried.input_tokens, tried.output_tokens) == (0, 0)
    assert (answered.model, answered.outcome, answered.provider) == ("gpt-4o", "ok", "openai")
    # the tokens the fallback's server counted, at the fallback's price
    tokens = (served["prompt_tokens"], served["completion_tokens"])
    assert (answered.input_tokens, answered.output_tokens) == tokens
    assert answered.cost_usd == pytest.approx(cost_of("gpt-4o", *tokens))
    assert answered.cost_usd > cost_of("gpt-4o-mini", *tokens)
    assert ledger.spent_usd == pytest.approx(answered.cost_usd)
    after = metrics.counter("model_cost_usd_total", labels={"model": "gpt-4o"})
    assert after - before == pytest.approx(answered.cost_usd)
    if how.endswith("invoke"):  # what LangSmith reads a run's cost from
        usage: dict[str, Any] = dict(message.usage_metadata or {})  # type: ignore[attr-defined]
        assert usage["total_cost"] == pytest.approx(answered.cost_usd)
