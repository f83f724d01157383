"""What LangGraph Server refuses when it is given, before it stores anything: 422, one line.

A bad input (no task, an unknown agent, ``rounds: 0``, a threshold of 1.5, a misspelt key) was
a run created and then failed, its input in the thread's first checkpoint; a wrong-typed
``threads.update_state`` was written into the checkpoint (a misspelt key was dropped, yet a
checkpoint written), or answered 500 when ``as_node`` ran a router on it; a cron's bad input was
stored, to fail each of its runs.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from langgraph_sdk import get_client
from langgraph_sdk.client import LangGraphClient

pytestmark = [pytest.mark.server, pytest.mark.slow]

OFF = {"memory": "off"}
WORKERS = "valid: researcher, analyst, critic, writer"
MEETING_KEYS = (
    "topic, participants, rounds, round, turn, transcript, messages, assessments, consensus, "
    "summary, usage"
)


@pytest.fixture
def client(server_url: str) -> LangGraphClient:
    return get_client(url=server_url)


async def _refused(call: Any) -> str:
    """The detail of the 422 ``call`` is answered with (one line)."""
    with pytest.raises(httpx.HTTPStatusError) as caught:
        await call
    assert caught.value.response.status_code == 422, caught.value.response.text
    detail: str = caught.value.response.json()["detail"]
    assert "\n" not in detail
    return detail


@pytest.mark.parametrize(
    ("graph", "given", "detail"),
    [
        ("orchestration", {}, "input 'task' must be a non-empty text, got None"),
        ("orchestration", {"task": "  "}, "input 'task' must be a non-empty text, got '  '"),
        ("orchestration", {"task": 5}, "input 'task' must be a non-empty text, got 5"),
        ("orchestration", {"task": "Plan", "team": ["nobody"]},
         f"input 'team' names unknown worker 'nobody'; {WORKERS}"),
        ("orchestration", {"task": "Plan", "require_approval": "yes"},
         "input 'require_approval' must be true or false, got 'yes'"),
        ("orchestration", {"task": "Plan", "require_aproval": True},
         "input key 'require_aproval' is unknown; valid: task, team, planner_picks, "
         "require_approval"),
        ("orchestration", "Plan a picnic",
         "the orchestration input must be an object of task, team, planner_picks, "
         "require_approval, got 'Plan a picnic'"),
        ("meeting", {"topic": "Lunch", "rounds": 0},
         "input 'rounds' must be a whole number from 1 to 20, got 0"),
        ("meeting", {"topic": "Lunch", "rounds": "two"},
         "input 'rounds' must be a whole number from 1 to 20, got 'two'"),
        ("validation", {"items": ["Water is wet."], "threshold": 1.5},
         "input 'threshold' must be a number in (0, 1], got 1.5"),
        ("validation", {"items": ["Water is wet."], "validators": 0},
         "input 'validators' must be a list of agent names, got 0"),
        ("validation", {"items": []},
         'input \'items\' must be a non-empty list of texts or {"id", "text"} objects, got []'),
    ],
)  # fmt: skip
async def test_a_bad_input_is_refused_before_a_run_is_made(
    client: LangGraphClient, graph: str, given: Any, detail: str
) -> None:
    thread_id = (await client.threads.create())["thread_id"]
    refused = client.runs.wait(thread_id, graph, input=given, context=OFF)
    assert await _refused(refused) == detail
    assert await client.runs.list(thread_id) == []
    assert (await client.threads.get_state(thread_id))["checkpoint"] is None


async def test_a_stateless_run_and_the_runs_context_are_checked_too(
    client: LangGraphClient,
) -> None:
    threads = await client.threads.count()
    # a run without a thread would make one for itself
    refused = client.runs.wait(None, "meeting", input={"topic": ""}, context=OFF)
    assert await _refused(refused) == "input 'topic' must be a non-empty text, got ''"
    # the agents the input may name are those of the run's context
    refused = client.runs.wait(
        None, "meeting", input={"topic": "Lunch"}, context={"agents_file": "/no/agents.toml"}
    )
    assert await _refused(refused) == "agents file /no/agents.toml does not exist"
    assert await client.threads.count() == threads
    # a good input still runs
    result = await client.runs.wait(
        None, "validation", context=OFF,
        input={"items": ["Water is wet."], "validators": ["factual_accuracy"]},
    )  # fmt: skip
    assert isinstance(result, dict)
    assert [r["validators"] for r in result["results"]] == [1]


async def test_a_command_update_or_goto_the_graph_lacks_is_refused(
    client: LangGraphClient,
) -> None:
    thread_id = (await client.threads.create())["thread_id"]
    await client.runs.wait(thread_id, "meeting", input={"topic": "Lunch", "rounds": 1},
                           context=OFF)  # fmt: skip
    runs = len(await client.runs.list(thread_id))
    refused = client.runs.wait(thread_id, "meeting", command={"update": {"rounds": "x"}})
    assert await _refused(refused) == (
        "state rounds='x' is invalid: Input should be a valid integer (rounds takes int)"
    )
    refused = client.runs.wait(thread_id, "meeting", command={"goto": "vote"})
    assert await _refused(refused) == (
        "command goto 'vote' is no node of meeting; valid: speak, moderate, summarize"
    )
    assert len(await client.runs.list(thread_id)) == runs


async def test_a_state_update_the_state_schema_does_not_allow_is_refused_unwritten(
    client: LangGraphClient,
) -> None:
    thread_id = (await client.threads.create())["thread_id"]
    await client.runs.wait(thread_id, "meeting", input={"topic": "Lunch", "rounds": 1},
                           context=OFF)  # fmt: skip
    before = await client.threads.get_state(thread_id)
    history = len(await client.threads.get_history(thread_id, limit=100))
    bad: list[tuple[dict[str, Any], str | None, str]] = [
        # was answered 500: the moderator's router compared 2 > 'two'
        ({"rounds": "two"}, "moderate",
         "state rounds='two' is invalid: Input should be a valid integer (rounds takes int)"),
        # was dropped, and a checkpoint written all the same
        ({"roundz": 2}, "moderate", f"state key 'roundz' is unknown; valid: {MEETING_KEYS}"),
        # was answered 500: the transcript's reducer added a text to a list
        ({"transcript": "hi"}, "speak",
         "state transcript='hi' is invalid: Input should be a valid list "
         "(transcript takes list[Utterance])"),
        # was written as given: the next run's router failed on it
        ({"transcript": [{"round": "1", "agent": "critic", "text": "No."}]}, None,
         "state transcript[0].round='1' is invalid: Input should be a valid integer "
         "(transcript takes list[Utterance])"),
        ({"consensus": 1}, None,
         "state consensus=1 is invalid: Input should be a valid boolean (consensus takes bool)"),
    ]  # fmt: skip
    for values, as_node, detail in bad:
        refused = client.threads.update_state(thread_id, values, as_node=as_node)
        assert await _refused(refused) == detail
    after = await client.threads.get_state(thread_id)
    assert after["checkpoint"] == before["checkpoint"]
    assert len(await client.threads.get_history(thread_id, limit=100)) == history
    # what the schema allows is written: a value, a message in any form add_messages takes
    await client.threads.update_state(
        thread_id, {"summary": "Pizza.", "messages": [{"role": "user", "content": "Agreed."}]},
        as_node="summarize",
    )  # fmt: skip
    state = await client.threads.get_state(thread_id)
    assert state["values"]["summary"] == "Pizza."
    assert state["values"]["messages"][-1]["content"] == "Agreed."


async def test_a_cron_with_a_bad_input_is_refused_and_not_stored(client: LangGraphClient) -> None:
    crons = await client.crons.count()
    refused = client.crons.create(
        "meeting", schedule="0 0 1 1 *", input={"topic": "Standup", "rounds": 0}
    )
    assert await _refused(refused) == "input 'rounds' must be a whole number from 1 to 20, got 0"
    # an assistant's cron: checked with the agents of the assistant's context
    assistant = await client.assistants.create("meeting", context=OFF)
    refused = client.crons.create(
        assistant["assistant_id"], schedule="0 0 1 1 *",
        input={"topic": "Standup", "participants": ["zed"]},
    )  # fmt: skip
    assert await _refused(refused) == f"input 'participants' names unknown worker 'zed'; {WORKERS}"
    assert await client.crons.count() == crons
    cron = await client.crons.create(
        assistant["assistant_id"], schedule="0 0 1 1 *", input={"topic": "Standup"}
    )
    try:
        refused = client.crons.update(cron["cron_id"], input={"topic": "Standup", "rounds": 99})
        assert await _refused(refused) == (
            "input 'rounds' must be a whole number from 1 to 20, got 99"
        )
        [stored] = [c for c in await client.crons.search() if c["cron_id"] == cron["cron_id"]]
        assert stored["payload"]["input"] == {"topic": "Standup"}
    finally:
        await client.crons.delete(cron["cron_id"])
