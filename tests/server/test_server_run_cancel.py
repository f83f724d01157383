"""A run cancelled on LangGraph Server stops its nodes' model calls: the server cancels the task
that reads the graph's ``astream``, and the calls running on its worker threads (which that
cancellation does not reach) end at their next check instead of waiting for their answers."""

from __future__ import annotations

import time

import httpx
import pytest
from langgraph_sdk import get_client

from tests.server.conftest import running_langgraph_dev

pytestmark = [pytest.mark.server, pytest.mark.slow]

#: The simulated provider's wait before each answer: far beyond the test's patience, so a call
#: that is not stopped is still waiting when the test looks.
TTFT_S = 600.0
#: The only clock: how long a stopped call may take to show as ended on a busy machine.
PATIENCE_S = 120.0
ITEMS = {"items": [{"id": "a", "text": "The bakery opens at 7."}]}


def _in_flight(url: str) -> float:
    """Calls holding a slot of the server's limiters (its Prometheus gauge)."""
    text = httpx.get(f"{url}/multiagent/metrics", timeout=30).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("multiagent_backpressure_in_flight")
    )


def _calls(url: str) -> dict[str, int]:
    summary = httpx.get(f"{url}/multiagent/metrics/summary", timeout=30).json()
    return dict(summary["calls"])


def _until(condition: object, what: str) -> None:
    deadline = time.monotonic() + PATIENCE_S
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


async def test_a_cancelled_run_stops_its_model_calls(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    with running_langgraph_dev(tmp_path_factory, MULTIAGENT_SIM__TTFT_S=str(TTFT_S)) as url:
        client = get_client(url=url)
        thread_id = (await client.threads.create())["thread_id"]
        run = await client.runs.create(
            thread_id, "validation", input=ITEMS, context={"memory": "off"}
        )
        _until(lambda: _in_flight(url) >= 1, "the validators never reached the provider")
        waiting = _in_flight(url)
        await client.runs.cancel(thread_id, run["run_id"], wait=True)
        # the validators' calls end, cancelled, long before their answers would come
        _until(lambda: _in_flight(url) == 0, "the cancelled run's calls kept their slots")
        _until(lambda: _calls(url)["cancelled"] >= waiting, "the calls did not end as cancelled")
        assert _calls(url)["ok"] == 0
        assert (await client.runs.get(thread_id, run["run_id"]))["status"] in {
            "interrupted",
            "error",
        }
