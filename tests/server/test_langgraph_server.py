"""The three graphs on a real LangGraph Server (``langgraph dev``), driven through the SDK.

What a LangGraph user does: minimal inputs, a context that picks the profile and the budget,
``updates`` and ``messages-tuple`` streams, the plan-approval interrupt answered with
``Command(resume=...)``, and agent memory in the server's store.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from langgraph_sdk import get_client
from langgraph_sdk.client import LangGraphClient

pytestmark = [pytest.mark.server, pytest.mark.slow]

MINIMAL_INPUTS: dict[str, dict[str, Any]] = {
    "orchestration": {"task": "Plan a community vegetable garden"},
    "meeting": {"topic": "Should the team adopt a four-day week?"},
    "validation": {"items": [{"id": "a", "text": "Water boils at 100 C at sea level."}]},
}


@pytest.fixture
def client(server_url: str) -> LangGraphClient:
    return get_client(url=server_url)


async def _run(
    client: LangGraphClient, graph: str, **kwargs: Any
) -> tuple[str, dict[str, Any], str]:
    """Run ``graph`` on a new thread to its end; return the thread id, final state, status."""
    thread = await client.threads.create()
    result = await client.runs.wait(thread["thread_id"], graph, **kwargs)
    assert isinstance(result, dict)
    runs = await client.runs.list(thread["thread_id"])
    return thread["thread_id"], result, runs[0]["status"]


async def test_assistants_declare_the_context_and_the_minimal_inputs(
    client: LangGraphClient,
) -> None:
    assistants = {a["graph_id"]: a for a in await client.assistants.search()}
    assert set(assistants) == set(MINIMAL_INPUTS)
    for graph, assistant in assistants.items():
        schemas = await client.assistants.get_schemas(assistant["assistant_id"])
        context = schemas["context_schema"]
        assert context is not None
        assert {"profile", "policy", "provider", "model", "budget_usd", "memory"} <= set(
            context["properties"]
        )
        assert context.get("required", []) == []  # every field has a default
        assert schemas["input_schema"]["required"] == list(MINIMAL_INPUTS[graph])


async def test_orchestration_runs_from_a_task_alone(client: LangGraphClient) -> None:
    _, state, status = await _run(client, "orchestration", input=MINIMAL_INPUTS["orchestration"])
    assert status == "success"
    assert state["team"] == ["researcher", "analyst", "critic", "writer"]
    assert state["output"].strip()
    assert {c["agent"] for c in state["contributions"]} <= set(state["team"])
    assert [u["node"] for u in state["usage"]].count("synthesize") == 1


async def test_meeting_runs_from_a_topic_alone(client: LangGraphClient) -> None:
    _, state, status = await _run(client, "meeting", input=MINIMAL_INPUTS["meeting"])
    assert status == "success"
    assert state["participants"] == ["researcher", "analyst", "critic"]
    assert state["rounds"] == 2
    assert [u["agent"] for u in state["transcript"][:3]] == state["participants"]
    assert state["summary"].strip()


async def test_validation_runs_from_items_alone(client: LangGraphClient) -> None:
    _, state, status = await _run(client, "validation", input=MINIMAL_INPUTS["validation"])
    assert status == "success"
    [result] = state["results"]
    assert result["id"] == "a"
    assert result["validators"] == result["responded"] >= 1
    assert result["status"] in ("passed", "failed")


async def test_a_context_chooses_the_profile(client: LangGraphClient) -> None:
    task = {"task": "Compare two database designs"}
    _, default, _ = await _run(client, "orchestration", input=task)
    _, chosen, status = await _run(
        client, "orchestration", input=task, context={"profile": "staging_quality"}
    )
    assert status == "success"

    def planner_model(state: dict[str, Any]) -> str:
        return next(u["model"] for u in state["usage"] if u["node"] == "plan")

    # the planner calls the standard tier: gpt-4o-mini in dev_balanced, gpt-4o in staging
    assert planner_model(default) == "gpt-4o-mini"
    assert planner_model(chosen) == "gpt-4o"


async def test_a_context_budget_stops_the_run(client: LangGraphClient) -> None:
    thread = await client.threads.create()
    errors = [
        chunk.data
        async for chunk in client.runs.stream(
            thread["thread_id"],
            "orchestration",
            # a task no other test runs: answers from the completion cache cost nothing
            input={"task": "Budget a kitchen remodel"},
            context={"budget_usd": 0.0001, "memory": "off"},
        )
        if chunk.event == "error"
    ]
    assert len(errors) == 1
    assert errors[0]["error"] == "BudgetExceededError"
    assert "budget" in errors[0]["message"].lower()  # the reason, not "an internal error"
    [run] = await client.runs.list(thread["thread_id"])
    assert run["status"] == "error"
    state = await client.threads.get_state(thread["thread_id"])
    assert "output" not in state["values"]


async def test_a_bad_context_value_is_refused_naming_it_and_the_valid_ones(
    client: LangGraphClient,
) -> None:
    thread = await client.threads.create()
    with pytest.raises(httpx.HTTPStatusError) as caught:
        await client.runs.wait(
            thread["thread_id"], "meeting", input=MINIMAL_INPUTS["meeting"],
            context={"profile": "no_such_profile"},
        )  # fmt: skip
    assert caught.value.response.status_code == 422
    detail = caught.value.response.json()["detail"]
    assert detail.startswith("context profile='no_such_profile' is invalid: ")
    assert "'prod_balanced'" in detail  # the valid ones
    assert "\n" not in detail
    assert await client.runs.list(thread["thread_id"]) == []  # refused before a run was made


async def test_a_misspelt_context_key_is_refused_not_dropped(client: LangGraphClient) -> None:
    # the server drops keys the context schema does not name: the run would go on with the
    # profile's budget, not the one asked for
    valid = "valid: profile, policy, provider, model, budget_usd, memory, agents_file"
    thread = await client.threads.create()
    with pytest.raises(httpx.HTTPStatusError) as caught:
        await client.runs.wait(
            thread["thread_id"], "orchestration", input=MINIMAL_INPUTS["orchestration"],
            context={"budget": 0.0001},
        )  # fmt: skip
    assert caught.value.response.status_code == 422
    assert caught.value.response.json() == {"detail": f"context key 'budget' is unknown; {valid}"}
    assert await client.runs.list(thread["thread_id"]) == []
    # an assistant's context, which each of its runs would take, is checked when it is stored
    before = len(await client.assistants.search(graph_id="orchestration", limit=100))
    with pytest.raises(httpx.HTTPStatusError) as caught:
        await client.assistants.create("orchestration", context={"budget": 0.0001})
    assert caught.value.response.status_code == 422
    assert len(await client.assistants.search(graph_id="orchestration", limit=100)) == before
    assistant = await client.assistants.create("orchestration", context={"budget_usd": 0.0001})
    with pytest.raises(httpx.HTTPStatusError) as caught:
        await client.assistants.update(assistant["assistant_id"], context={"budgett": 1})
    assert caught.value.response.json() == {"detail": f"context key 'budgett' is unknown; {valid}"}
    stored = await client.assistants.get(assistant["assistant_id"])
    assert stored["context"] == {"budget_usd": 0.0001}
    # and a cron's, whose runs start later, past any caller
    crons = await client.crons.count()
    with pytest.raises(httpx.HTTPStatusError) as caught:
        await client.crons.create("meeting", schedule="0 0 1 1 *", input=MINIMAL_INPUTS["meeting"],
                                  context={"rounds": 2})  # fmt: skip
    assert caught.value.response.status_code == 422
    assert await client.crons.count() == crons


async def test_streams_updates_and_model_tokens(client: LangGraphClient) -> None:
    thread = await client.threads.create()
    updated: list[str] = []
    token_nodes: list[str] = []
    # a topic no other test uses: a completion-cache hit would come back as one whole message
    async for chunk in client.runs.stream(
        thread["thread_id"], "meeting", input={"topic": "How should on-call rotations work?"},
        stream_mode=["updates", "messages-tuple"],
    ):  # fmt: skip
        if chunk.event == "updates":
            updated.extend(chunk.data)
        elif chunk.event == "messages":
            message, metadata = chunk.data
            # token chunks from model calls; the meeting's transcript messages (whole "ai"
            # messages written to state) come through this stream mode too
            if message["type"] == "AIMessageChunk":
                token_nodes.append(metadata["langgraph_node"])
            else:
                assert message["type"] == "ai", message
                assert message["name"], message
    assert updated[:3] == ["speak", "speak", "speak"]
    assert "moderate" in updated
    assert updated[-1] == "summarize"
    # every agent streams token by token: the speakers and the summary
    assert token_nodes.count("summarize") > 1
    assert token_nodes.count("speak") > 3


async def test_plan_approval_round_trips_through_command_resume(client: LangGraphClient) -> None:
    thread_id, state, _ = await _run(
        client, "orchestration", input={"task": "Plan a team offsite", "require_approval": True}
    )
    assert "output" not in state
    paused = await client.threads.get_state(thread_id)
    assert paused["next"] == ["review"]
    [interrupt] = [i for task in paused["tasks"] for i in task["interrupts"]]
    assert interrupt["value"]["kind"] == "plan_approval"
    assert [step["agent"] for step in interrupt["value"]["plan"]]

    result = await client.runs.wait(
        thread_id, "orchestration",
        command={"resume": {"approved": True, "feedback": "keep it short"}},
    )  # fmt: skip
    assert isinstance(result, dict)
    assert result["approval"] == {"approved": True, "feedback": "keep it short"}
    assert result["output"].strip()
    assert all("keep it short" in c["subtask"] for c in result["contributions"])


async def test_a_rejected_plan_ends_the_run_without_work(client: LangGraphClient) -> None:
    thread_id, _, _ = await _run(
        client, "orchestration", input={"task": "Plan a product launch", "require_approval": True}
    )
    result = await client.runs.wait(thread_id, "orchestration", command={"resume": False})
    assert isinstance(result, dict)
    assert result["approval"]["approved"] is False
    assert "output" not in result
    assert result["contributions"] == []


async def test_agents_remember_in_the_server_store(client: LangGraphClient) -> None:
    thread_id, state, _ = await _run(client, "meeting", input=MINIMAL_INPUTS["meeting"])
    for name in state["participants"]:
        found = await client.store.search_items(["multiagent", "memory", name], limit=50)
        mine = [item for item in found["items"] if item["value"]["thread_id"] == thread_id]
        spoke = sum(1 for u in state["transcript"] if u["agent"] == name)
        assert len(mine) == spoke
        assert all(item["value"]["text"].strip() for item in mine)


async def test_input_holding_pii_is_redacted_before_the_server_stores_it(
    client: LangGraphClient,
) -> None:
    email, iban = "jane.roe@example.org", "DE89370400440532013000"
    task = f"Write to {email} about the refund to {iban}"
    thread_id, state, status = await _run(
        client, "orchestration", input={"task": task}, context={"profile": "prod_balanced"}
    )
    assert status == "success"
    assert "[REDACTED_EMAIL]" in state["task"]
    history = await client.threads.get_history(thread_id, limit=100)
    stored = repr(history) + repr(await client.threads.get(thread_id))
    assert len(history) > 3  # every checkpoint, the first one (the raw input's) included
    assert email not in stored
    assert iban not in stored
    # a profile without redaction keeps the input as given: the scan above can see it
    _, plain, _ = await _run(client, "orchestration", input={"task": task})
    assert email in plain["task"]


async def test_a_cron_input_holding_pii_is_redacted_before_the_server_stores_it(
    client: LangGraphClient,
) -> None:
    # the server stores a cron's payload as given and starts each of its runs from it
    email = "ada.lovelace@example.org"
    task = {"task": f"Write to {email} about the invoice"}
    thread = await client.threads.create()
    cron = await client.crons.create_for_thread(
        thread["thread_id"], "orchestration", schedule="0 0 1 1 *", input=task,
        context={"profile": "prod_balanced"},
    )  # fmt: skip
    try:
        assert cron["payload"]["input"]["task"] == "Write to [REDACTED_EMAIL] about the invoice"
        assert email not in repr(await client.crons.search(thread_id=thread["thread_id"]))
        # an update without a context keeps the cron's, and so its redaction
        await client.crons.update(cron["cron_id"], input={"task": f"Call {email}"})
        assert email not in repr(await client.crons.search(thread_id=thread["thread_id"]))
    finally:
        await client.crons.delete(cron["cron_id"])


async def test_a_resume_and_an_update_holding_pii_are_redacted_before_the_server_stores_them(
    client: LangGraphClient,
) -> None:
    email, phone = "max.power@example.net", "+1 415 555 0199"
    context = {"profile": "prod_balanced", "memory": "off"}
    thread_id, _, _ = await _run(
        client, "orchestration", input={"task": "Plan a refund call", "require_approval": True},
        context=context,
    )  # fmt: skip
    result = await client.runs.wait(
        thread_id, "orchestration", context=context,
        command={
            "resume": {"approved": True, "feedback": f"mail {email} first"},
            "update": {"rationale": f"call {phone}"},
        },
    )  # fmt: skip
    assert isinstance(result, dict)
    assert "[REDACTED_EMAIL]" in result["approval"]["feedback"]
    assert "[REDACTED_PHONE]" in result["rationale"]
    stored = repr(await client.threads.get_history(thread_id, limit=100))
    assert email not in stored
    assert phone not in stored


async def test_resuming_a_thread_with_nothing_to_resume_says_so(client: LangGraphClient) -> None:
    thread = await client.threads.create()
    with pytest.raises(httpx.HTTPStatusError) as caught:
        await client.runs.wait(
            thread["thread_id"], "orchestration", command={"resume": {"approved": True}}
        )
    assert caught.value.response.status_code == 409
    assert caught.value.response.json() == {
        "detail": f"thread {thread['thread_id']} has nothing to resume: no run has paused it "
        "(it has no checkpoint); start a run with an input first"
    }  # one line, not LangGraph's "TypeError: 'NoneType' object is not iterable"
    assert await client.runs.list(thread["thread_id"]) == []  # refused before a run was made


async def test_an_update_on_a_thread_with_no_checkpoint_says_so_and_a_goto_runs(
    client: LangGraphClient,
) -> None:
    thread = await client.threads.create()
    with pytest.raises(httpx.HTTPStatusError) as caught:
        await client.runs.wait(
            thread["thread_id"], "orchestration", command={"update": {"task": "x"}}
        )
    assert caught.value.response.status_code == 409
    assert caught.value.response.json() == {
        "detail": f"thread {thread['thread_id']} has nothing to update: it has no checkpoint; "
        "start a run with an input first, or give the command a goto"
    }
    assert await client.runs.list(thread["thread_id"]) == []
    # with a goto the command starts there: no checkpoint is needed, and it is let through
    result = await client.runs.wait(
        thread["thread_id"], "orchestration",
        command={"goto": "plan", "update": {"task": "Plan a picnic"}},
    )  # fmt: skip
    assert isinstance(result, dict)
    assert result["output"].strip()


async def test_a_run_cancelled_with_rollback_leaves_a_thread_that_says_how_to_go_on(
    client: LangGraphClient,
) -> None:
    thread_id = (await client.threads.create())["thread_id"]
    run = await client.runs.create(
        thread_id, "meeting", input={"topic": "Rollback a standup", "rounds": 3},
        context={"memory": "off"},
    )  # fmt: skip
    await client.runs.cancel(thread_id, run["run_id"], wait=True, action="rollback")
    assert (await client.threads.get(thread_id))["status"] == "idle"
    assert (await client.threads.get_state(thread_id))["checkpoint"] is None  # all rolled back
    runs = len(await client.runs.list(thread_id))
    # no input continues a thread from its last checkpoint; this one has none
    with pytest.raises(httpx.HTTPStatusError) as caught:
        await client.runs.wait(thread_id, "meeting", input=None)
    assert caught.value.response.status_code == 409
    assert caught.value.response.json() == {
        "detail": f"thread {thread_id} has nothing to continue: it has no checkpoint (a run "
        "cancelled with rollback leaves none); start a run with an input"
    }  # not LangGraph's "EmptyInputError: Received no input for __start__"
    assert len(await client.runs.list(thread_id)) == runs  # refused before a run was made
    result = await client.runs.wait(
        thread_id, "meeting", input={"topic": "Rollback a standup"}, context={"memory": "off"}
    )
    assert isinstance(result, dict)
    assert result["summary"].strip()


async def test_a_resume_queued_behind_the_run_that_pauses_the_thread_goes_through(
    client: LangGraphClient,
) -> None:
    thread = await client.threads.create()
    await client.runs.create(
        thread["thread_id"], "orchestration",
        input={"task": "Plan a picnic", "require_approval": True},
    )  # fmt: skip
    # sent while that run is (almost always) still pending, before the thread has a checkpoint
    result = await client.runs.wait(
        thread["thread_id"], "orchestration", command={"resume": {"approved": True}}
    )
    assert isinstance(result, dict)
    assert result["approval"]["approved"] is True
    assert result["output"].strip()


async def test_a_new_input_on_a_thread_that_already_ran_is_refused_not_mixed(
    client: LangGraphClient,
) -> None:
    thread_id, first, status = await _run(
        client, "meeting", input={"topic": "Lunch order", "rounds": 1}, context={"memory": "off"}
    )
    assert status == "success"
    runs = len(await client.runs.list(thread_id))
    # its transcript and rounds add up: the new topic got one round, numbered 2, after the
    # first topic's (and an orchestration's synthesis took both tasks' contributions)
    with pytest.raises(httpx.HTTPStatusError) as caught:
        await client.runs.wait(
            thread_id, "meeting", input={"topic": "Office plants"}, context={"memory": "off"}
        )
    assert caught.value.response.status_code == 409
    assert caught.value.response.json() == {
        "detail": f"thread {thread_id} already holds a run, and a new input would add to its "
        "state (transcript, contributions, usage); start it on a new thread, or continue this "
        "one with no input or a command (resume, update)"
    }
    assert len(await client.runs.list(thread_id)) == runs  # refused before a run was made
    state = await client.threads.get_state(thread_id)
    assert state["values"]["topic"] == "Lunch order"
    assert state["values"]["transcript"] == first["transcript"]
