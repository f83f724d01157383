"""A LangGraph Server whose own profile redacts (``MULTIAGENT_ENV=prod_balanced``).

``threads.update_state`` shows the server's auth handler no values, so the request hook cannot
redact it; the compiled graph does, by the server's profile (it is given no run context).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from langgraph_sdk import get_client
from langgraph_sdk.client import LangGraphClient

from tests.server.conftest import running_langgraph_dev

pytestmark = [pytest.mark.server, pytest.mark.slow]


@pytest.fixture(scope="module")
def redacting_server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running_langgraph_dev(tmp_path_factory, MULTIAGENT_ENV="prod_balanced") as url:
        yield url


async def test_a_state_update_is_stored_only_as_placeholders(redacting_server_url: str) -> None:
    client: LangGraphClient = get_client(url=redacting_server_url)
    email = "frank.castle@example.org"
    thread_id = (await client.threads.create())["thread_id"]
    await client.runs.wait(thread_id, "orchestration", input={"task": "Plan a call"},
                           context={"memory": "off"})  # fmt: skip
    await client.threads.update_state(thread_id, {"task": f"Plan a call to {email}"})
    state = await client.threads.get_state(thread_id)
    assert "[REDACTED_EMAIL]" in state["values"]["task"]
    assert email not in repr(await client.threads.get_history(thread_id, limit=100))
