"""The HTTP simulator against the real OpenAI clients, over real HTTP on 127.0.0.1."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import httpx2
import openai
import pytest
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from langchain_openai import ChatOpenAI
from pydantic import BaseModel, Field
from typer.testing import CliRunner, Result

from multiagent.sim.config import SimServerConfig
from multiagent.sim.model import SimulatedChatModel
from multiagent.sim.runner import run_sim_server
from multiagent.sim.schedule import parse_schedule

MESSAGES: list[BaseMessage] = [
    SystemMessage("You are the analyst: weigh the trade-offs."),
    HumanMessage("Compare batch and streaming ingestion for the metrics pipeline."),
]
RAW_MESSAGES: list[Any] = [{"role": "user", "content": "Summarise the incident review."}]
runner = CliRunner()


def _cli(*args: str) -> Result:
    """Run the CLI; imported here so the server tests do not depend on every command importing."""
    from multiagent.cli import app

    return runner.invoke(app, list(args))


def _stats(url: str) -> dict[str, Any]:
    document: dict[str, Any] = httpx2.get(url.removesuffix("/v1") + "/sim/stats").json()
    return document


def _until_idle(url: str) -> None:
    """Wait until the server has seen every request end (a closed stream ends on its side a
    moment later); give up after a thousand looks."""
    for _ in range(1000):
        if not _stats(url)["in_flight"]:
            return
        time.sleep(0.01)


def _reset(url: str) -> None:
    httpx2.post(url.removesuffix("/v1") + "/sim/reset").raise_for_status()


def _chat(url: str, **kwargs: Any) -> ChatOpenAI:
    return ChatOpenAI(model="gpt-4o-mini", api_key="sim", base_url=url, max_retries=0, **kwargs)


def _client(url: str) -> openai.OpenAI:
    return openai.OpenAI(api_key="sim", base_url=url, max_retries=0)


@pytest.fixture(scope="module")
def sim_url() -> Iterator[str]:
    """A simulator with limits far above what these tests send."""
    with run_sim_server(SimServerConfig(rpm=1e6, tpm=1e9)) as url:
        yield url


# -- the OpenAI protocol --------------------------------------------------------------------


def test_invoke_matches_the_in_process_model(sim_url: str) -> None:
    reply = _chat(sim_url).invoke(MESSAGES)
    local = SimulatedChatModel(model="gpt-4o-mini").invoke(MESSAGES)
    assert reply.text == local.text
    assert reply.usage_metadata is not None
    assert local.usage_metadata is not None
    assert reply.usage_metadata["input_tokens"] == local.usage_metadata["input_tokens"]
    assert reply.usage_metadata["output_tokens"] == local.usage_metadata["output_tokens"]
    assert reply.response_metadata["finish_reason"] == "stop"


def test_stream_joins_to_invoke_with_usage(sim_url: str) -> None:
    model = _chat(sim_url, stream_usage=True)
    reply = model.invoke(MESSAGES)
    chunks = list(model.stream(MESSAGES))
    assert len(chunks) > 5
    assert "".join(chunk.text for chunk in chunks) == reply.text
    joined = chunks[0]
    for chunk in chunks[1:]:
        joined = joined + chunk
    assert joined.usage_metadata is not None
    assert reply.usage_metadata is not None
    assert joined.usage_metadata["total_tokens"] == reply.usage_metadata["total_tokens"]
    assert [c for c in chunks if c.usage_metadata][-1] is chunks[-2]  # last before LangChain's end


async def test_async_stream_and_invoke(sim_url: str) -> None:
    model = _chat(sim_url)
    reply = await model.ainvoke(MESSAGES)
    pieces = [chunk.text async for chunk in model.astream(MESSAGES)]
    assert "".join(pieces) == reply.text


def test_raw_client_stream_ends_with_a_usage_chunk(sim_url: str) -> None:
    client = _client(sim_url)
    plain = client.chat.completions.create(model="gpt-4o", messages=RAW_MESSAGES)
    chunks = list(
        client.chat.completions.create(
            model="gpt-4o",
            messages=RAW_MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == plain.choices[0].message.content
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert plain.usage is not None
    assert chunks[-1].usage.total_tokens == plain.usage.total_tokens
    assert all(c.usage is None for c in chunks[:-1])
    assert chunks[-2].choices[0].finish_reason == "stop"
    without = list(
        client.chat.completions.create(model="gpt-4o", messages=RAW_MESSAGES, stream=True)
    )
    assert all(c.usage is None for c in without)


def test_content_parts_max_tokens_and_stop(sim_url: str) -> None:
    client = _client(sim_url)
    parts: Any = [
        {"role": "user", "content": [{"type": "text", "text": "Summarise the incident review."}]}
    ]
    full = client.chat.completions.create(model="gpt-4o", messages=RAW_MESSAGES)
    assert client.chat.completions.create(model="gpt-4o", messages=parts).choices[
        0
    ].message.content == (full.choices[0].message.content)
    cut = client.chat.completions.create(
        model="gpt-4o", messages=RAW_MESSAGES, max_completion_tokens=4
    )
    assert cut.choices[0].finish_reason == "length"
    assert (full.choices[0].message.content or "").startswith(cut.choices[0].message.content or "")


class Finding(BaseModel):
    claim: str = Field(max_length=60)
    severity: Literal["low", "medium", "high"]


class Review(BaseModel):
    verdict: Literal["accept", "revise", "reject"]
    score: int = Field(ge=1, le=5)
    confidence: float = Field(ge=0.0, le=1.0)
    findings: list[Finding]
    note: str | None = None


@pytest.mark.parametrize("method", ["json_schema", "function_calling"])
def test_structured_output_through_the_real_client(
    sim_url: str, method: Literal["json_schema", "function_calling"]
) -> None:
    structured = _chat(sim_url).with_structured_output(Review, method=method)
    first = structured.invoke(MESSAGES)
    assert isinstance(first, Review)
    Review.model_validate(first.model_dump())
    assert structured.invoke(MESSAGES) == first


class TreeNode(BaseModel):
    name: str
    children: list[TreeNode]


@pytest.mark.timeout(60)
def test_a_recursive_response_format_gets_a_finite_instance(sim_url: str) -> None:
    # the openai SDK keeps the recursive $ref of a tree model; the simulator answered it with 500
    parsed = _client(sim_url).beta.chat.completions.parse(
        model="gpt-4o-mini", messages=RAW_MESSAGES, response_format=TreeNode
    )
    tree = parsed.choices[0].message.parsed
    assert isinstance(tree, TreeNode)
    defs = {
        "A": {"type": "object", "properties": {"a": {"$ref": "#/$defs/A"}}, "required": ["a"]},
        "B": {"$ref": "#/$defs/B"},
    }
    for name in ("A", "B"):  # no finite instance; B hung the server's event loop
        schema = {"$ref": f"#/$defs/{name}", "$defs": defs}
        with pytest.raises(openai.BadRequestError) as caught:
            _client(sim_url).chat.completions.create(
                model="gpt-4o-mini",
                messages=RAW_MESSAGES,
                response_format={
                    "type": "json_schema",
                    "json_schema": {"name": "loop", "schema": schema},
                },
            )
        assert caught.value.code == "invalid_value"


def test_tool_calls_match_the_in_process_model(sim_url: str) -> None:
    def lookup(account_id: int, region: Literal["eu", "us"]) -> str:
        """Look up an account."""
        return "ok"

    remote = _chat(sim_url).bind_tools([lookup]).invoke(MESSAGES)
    local = SimulatedChatModel(model="gpt-4o-mini").bind_tools([lookup]).invoke(MESSAGES)
    assert isinstance(remote, AIMessage)
    assert isinstance(local, AIMessage)
    assert remote.tool_calls[0]["name"] == "lookup"
    assert remote.tool_calls[0]["args"] == local.tool_calls[0]["args"]
    streamed = list(_chat(sim_url).bind_tools([lookup]).stream(MESSAGES))
    joined = streamed[0]
    for chunk in streamed[1:]:
        joined = joined + chunk
    assert joined.tool_calls[0]["args"] == remote.tool_calls[0]["args"]


def test_models_bad_requests_and_success_headers(sim_url: str) -> None:
    client = _client(sim_url)
    assert "gpt-4o-mini" in [m.id for m in client.models.list()]
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="gpt-4o", messages=[])
    assert caught.value.code == "invalid_value"
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o", messages=RAW_MESSAGES)
    assert raw.headers["x-ratelimit-limit-requests"] == "1000000"
    assert int(raw.headers["x-ratelimit-remaining-requests"]) > 0
    assert re.fullmatch(r"\d+ms|[\d.]+s", raw.headers["x-ratelimit-reset-tokens"])
    # the server's own time, as OpenAI's API reports it (the controller judges latency on it)
    assert int(raw.headers["openai-processing-ms"]) >= 0


@pytest.mark.parametrize(
    "change",
    [
        {"temperature": 5},
        {"top_p": 1.5},
        {"stream": "yes"},  # it streamed SSE to a client that asked for JSON
        {"messages": [{"role": "bogus", "content": "hi"}]},
        {"messages": [{"role": "user"}]},
    ],
)
def test_a_request_openai_refuses_is_a_400(sim_url: str, change: dict[str, Any]) -> None:
    body = {"model": "gpt-4o", "messages": RAW_MESSAGES, **change}
    answer = httpx2.post(f"{sim_url}/chat/completions", json=body, timeout=30)
    assert answer.status_code == 400
    assert answer.headers["content-type"].startswith("application/json")
    assert answer.json()["error"]["type"] == "invalid_request_error"


# -- limits, schedule, faults ---------------------------------------------------------------


def test_over_the_request_limit_is_a_429_with_openai_headers() -> None:
    with run_sim_server(SimServerConfig(rpm=60)) as url:
        client = _client(url)
        client.chat.completions.create(model="gpt-4o", messages=RAW_MESSAGES)
        served_cpu = _stats(url)["process_cpu_s"]  # the server process's CPU so far
        assert served_cpu > 0
        with pytest.raises(openai.RateLimitError) as caught:
            client.chat.completions.create(model="gpt-4o", messages=RAW_MESSAGES)
        headers = caught.value.response.headers
        wait_ms = int(headers["retry-after-ms"])
        assert 0 < wait_ms <= 1000  # one request/s: under a second left, however busy we were
        assert headers["retry-after"] == "1"
        assert headers["x-ratelimit-limit-requests"] == "60"
        assert headers["x-ratelimit-remaining-requests"] == "0"
        assert re.fullmatch(r"\d+ms|1s", headers["x-ratelimit-reset-requests"])
        assert {"x-ratelimit-limit-tokens", "x-ratelimit-remaining-tokens"} <= set(headers)
        assert caught.value.code == "rate_limit_exceeded"
        assert caught.value.type == "requests"
    # LangChain's client sees the same 429: at one request a minute, however late it comes
    # (at 60 a minute a loaded machine sent it after the next request's turn had come)
    with run_sim_server(SimServerConfig(rpm=1)) as url:
        _client(url).chat.completions.create(model="gpt-4o", messages=RAW_MESSAGES)
        with pytest.raises(openai.RateLimitError):
            _chat(url).invoke(MESSAGES)


def test_over_the_token_limit_is_a_429_naming_tokens() -> None:
    with run_sim_server(SimServerConfig(tpm=600)) as url:  # 10 tokens/s
        client = _client(url)
        client.chat.completions.create(model="gpt-4o", messages=RAW_MESSAGES, max_tokens=50)
        with pytest.raises(openai.RateLimitError) as caught:
            client.chat.completions.create(model="gpt-4o", messages=RAW_MESSAGES, max_tokens=50)
        assert caught.value.type == "tokens"
        assert caught.value.response.headers["x-ratelimit-limit-tokens"] == "600"
        assert int(caught.value.response.headers["retry-after"]) >= 5  # in debt for ~60 tokens
        assert _stats(url)["totals"]["rejected_tokens"] == 1


def test_concurrency_limit() -> None:
    # an open stream holds the only slot until the client closes it (a piece a second):
    # the second request meets it however slow the machine is
    with run_sim_server(SimServerConfig(max_concurrency=1, token_latency_s=1.0)) as url:
        client = _client(url)
        holding = client.chat.completions.create(model="gpt-4o", messages=RAW_MESSAGES, stream=True)
        next(iter(holding))  # the role chunk: the request is admitted and streaming
        assert _stats(url)["in_flight"] == 1
        with pytest.raises(openai.RateLimitError) as caught:
            client.chat.completions.create(model="gpt-4o", messages=RAW_MESSAGES)
        assert int(caught.value.response.headers["retry-after-ms"]) > 0
        assert "concurrent" in str(caught.value)
        holding.close()
        _until_idle(url)
        totals = _stats(url)["totals"]
        assert (totals["attempts"], totals["rejected_concurrency"], totals["aborted"]) == (2, 1, 1)
        fast = _client(url).chat.completions.create(
            model="gpt-4o", messages=RAW_MESSAGES, max_completion_tokens=1
        )
        assert fast.choices[0].finish_reason == "length"  # the slot is free again


def test_stats_count_exactly_and_early_sends_are_counted() -> None:
    # one request/s, holding one: the second and third come well inside the second's wait
    with run_sim_server(SimServerConfig(rpm=60, burst_s=1.0)) as url:
        client = _client(url)
        client.chat.completions.create(model="gpt-4o", messages=RAW_MESSAGES)
        served_cpu = _stats(url)["process_cpu_s"]  # the server process's CPU so far
        assert served_cpu > 0
        with pytest.raises(openai.RateLimitError) as caught:
            client.chat.completions.create(model="gpt-4o", messages=RAW_MESSAGES)
        with pytest.raises(openai.RateLimitError):  # sent at once: before Retry-After expired
            client.chat.completions.create(model="gpt-4o", messages=RAW_MESSAGES)
        time.sleep(int(caught.value.response.headers["retry-after-ms"]) / 1000 + 0.15)
        client.chat.completions.create(model="gpt-4o", messages=RAW_MESSAGES)
        totals = _stats(url)["totals"]
        expected = {
            "attempts": 4,
            "successes": 2,
            "rate_limited": 2,
            "server_errors": 0,
            "early": 1,
        }
        assert {k: totals[k] for k in expected} == expected
        assert totals["tokens_served"] > 0
        assert _stats(url)["process_cpu_s"] >= served_cpu
        _reset(url)
        assert _stats(url)["totals"]["attempts"] == 0


def test_schedule_phases_switch_limits_and_latency() -> None:
    schedule = parse_schedule(
        [
            {"name": "cut", "duration_s": 2, "rpm": 60},  # the first two requests fall here
            {"name": "raise", "duration_s": 60, "rpm": 60_000, "ttft_s": 0.1},
        ]
    )
    with run_sim_server(SimServerConfig(schedule=schedule)) as url:
        client = _client(url)
        _reset(url)
        client.chat.completions.create(model="gpt-4o", messages=RAW_MESSAGES)
        with pytest.raises(openai.RateLimitError):
            client.chat.completions.create(model="gpt-4o", messages=RAW_MESSAGES)
        while _stats(url)["current_phase"] == "cut":
            time.sleep(0.02)
        for _ in range(5):
            client.chat.completions.create(model="gpt-4o", messages=RAW_MESSAGES)
        report = _stats(url)
        cut, raised = report["phases"]
        assert report["current_phase"] == "raise"
        assert (cut["state"], cut["end_s"]) == ("done", 2.0)
        assert (cut["counts"]["attempts"], cut["counts"]["successes"]) == (2, 1)
        assert (raised["counts"]["attempts"], raised["counts"]["successes"]) == (5, 5)
        assert raised["capacity"]["requests_per_s"] == 1000.0
        assert raised["started_at"] == pytest.approx(cut["ended_at"])


def test_injected_server_errors_follow_the_seed() -> None:
    with run_sim_server(SimServerConfig(error_rate=0.5, seed=7)) as url:
        client = _client(url)

        def run() -> list[int]:
            statuses = []
            for _ in range(20):
                try:
                    client.chat.completions.create(model="gpt-4o", messages=RAW_MESSAGES)
                    statuses.append(200)
                except openai.InternalServerError as exc:
                    statuses.append(exc.status_code)
            return statuses

        first = run()
        totals = _stats(url)["totals"]
        failed = sum(status != 200 for status in first)
        assert set(first) == {200, 500, 503}
        assert (totals["attempts"], totals["server_errors"], totals["successes"]) == (
            20,
            failed,
            20 - failed,
        )
        _reset(url)
        assert run() == first


def test_latency_spikes_and_streamed_pacing() -> None:
    config = SimServerConfig(ttft_s=0.1, token_latency_s=0.005, spike_rate=1.0, spike_s=0.1)
    with run_sim_server(config) as url:
        client = _client(url)
        began = time.monotonic()
        stream = client.chat.completions.create(model="gpt-4o", messages=RAW_MESSAGES, stream=True)
        first_text_at = None
        pieces = 0
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                first_text_at = first_text_at or time.monotonic()
                pieces += 1
        ended = time.monotonic()
        assert first_text_at is not None
        # lower bounds only (the simulator's own delays): a busy machine can only add time
        assert first_text_at - began >= 0.2  # ttft + spike
        assert ended - began >= 0.2 + pieces * 0.005
        assert _stats(url)["totals"]["latency_spikes"] == 1


def test_a_client_leaving_mid_stream_frees_its_slot_and_counts_as_aborted() -> None:
    with run_sim_server(SimServerConfig(token_latency_s=0.02, max_concurrency=1)) as url:
        client = _client(url)
        stream = client.chat.completions.create(model="gpt-4o", messages=RAW_MESSAGES, stream=True)
        for _, _chunk in zip(range(3), stream, strict=False):
            pass
        stream.close()
        _until_idle(url)
        totals = _stats(url)["totals"]
        assert (totals["aborted"], totals["successes"]) == (1, 0)
        client.chat.completions.create(model="gpt-4o", messages=RAW_MESSAGES)  # slot is free


# -- the command line -----------------------------------------------------------------------


def test_cli_serve_help_and_bad_values(tmp_path: Path) -> None:
    result = _cli("sim", "serve", "--help")
    assert result.exit_code == 0
    assert "--rpm" in result.stdout
    assert "--schedule" in result.stdout
    bad_schedule = tmp_path / "bad.json"
    bad_schedule.write_text('[{"name": "a", "duration_s": -1}]')
    for args in (
        ["--rpm", "0"],
        ["--rpm", "-5"],
        ["--error-rate", "1.5"],
        ["--port", "70000"],
        ["--max-concurrency", "0"],
        ["--schedule", str(bad_schedule)],
    ):
        result = _cli("sim", "serve", *args)
        assert result.exit_code == 2, args
        assert result.stderr.count("\n") == 1, result.stderr
        assert "Traceback" not in result.output
    assert "duration_s=-1" in result.stderr
    # one rule for a rate, whatever side of 0 it is on (-5 said "at least 0", 0 was refused)
    assert _cli("sim", "serve", "--rpm", "-5").stderr == _cli(
        "sim", "serve", "--rpm", "0"
    ).stderr.replace("0.0", "-5.0")


def test_cli_serve_on_a_taken_port_is_one_line(sim_url: str) -> None:
    port = sim_url.removesuffix("/v1").rsplit(":", 1)[1]
    result = _cli("sim", "serve", "--port", port)
    assert result.exit_code == 2
    assert result.stderr == f"error: the simulator cannot listen on 127.0.0.1:{port}: " + (
        "Address already in use\n"
    )


def test_cli_stats_and_reset(sim_url: str) -> None:
    _client(sim_url).chat.completions.create(model="gpt-4o", messages=RAW_MESSAGES)
    result = _cli("sim", "stats", "--url", sim_url, "--json")
    assert result.exit_code == 0
    assert json.loads(result.stdout)["totals"]["successes"] >= 1
    table = _cli("sim", "stats", "--url", sim_url)
    assert "steady" in table.stdout
    assert _cli("sim", "reset", "--url", sim_url, "--json").exit_code == 0
    assert _stats(sim_url)["totals"]["attempts"] == 0
    down = _cli("sim", "stats", "--url", "http://127.0.0.1:9")
    assert down.exit_code == 1
    assert down.stderr.startswith("error: cannot reach the simulator")


def test_serve_runs_as_a_subprocess_and_prints_its_url() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "multiagent", "sim", "serve", "--port", "0", "--rpm", "120"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = re.search(r"http://127\.0\.0\.1:\d+/v1", line)
        assert match, line
        reply = _client(match.group(0)).chat.completions.create(
            model="gpt-4o", messages=RAW_MESSAGES
        )
        assert reply.choices[0].message.content
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0


def test_serve_serves_the_models_given_with_model_and_refuses_the_others() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "multiagent", "sim", "serve", "--port", "0",
         "--model", "house-large", "--model", "house-small"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        match = re.search(r"http://127\.0\.0\.1:\d+/v1", proc.stdout.readline())
        assert match
        client = _client(match.group(0))
        assert [m.id for m in client.models.list()] == ["house-large", "house-small"]
        reply = client.chat.completions.create(model="house-small", messages=RAW_MESSAGES)
        assert reply.model == "house-small"
        with pytest.raises(openai.NotFoundError):
            client.chat.completions.create(model="gpt-4o", messages=RAW_MESSAGES)
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0


def test_ctrl_c_with_a_request_in_flight_stops_without_a_traceback() -> None:
    # uvicorn cancels a request still running when its graceful shutdown ends, and logged the
    # cancellation's traceback on the way out; the client got "Internal Server Error" as
    # text/plain
    import signal
    import threading
    from contextlib import suppress

    proc = subprocess.Popen(
        [sys.executable, "-m", "multiagent", "sim", "serve", "--port", "0", "--ttft-ms", "600000"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # even run as a job
    )
    answers: list[httpx2.Response] = []
    try:
        assert proc.stdout is not None
        match = re.search(r"http://127\.0\.0\.1:\d+/v1", proc.stdout.readline())
        assert match
        url = match.group(0)

        def call() -> None:
            with suppress(httpx2.HTTPError):
                body = {"model": "gpt-4o-mini", "messages": RAW_MESSAGES}
                answers.append(httpx2.post(f"{url}/chat/completions", json=body, timeout=60))

        caller = threading.Thread(target=call)
        caller.start()
        for _ in range(1000):
            if _stats(url)["in_flight"]:
                break
            time.sleep(0.01)
        assert _stats(url)["in_flight"] == 1
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=30)
        caller.join()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0
    assert "Traceback" not in stderr, stderr
    assert "timeout graceful shutdown exceeded" in stderr  # uvicorn's own line says what it did
    # the request cut gets OpenAI's error document with 503, not a text/plain 500
    [answer] = answers
    assert answer.status_code == 503
    assert answer.headers["content-type"] == "application/json"
    error = answer.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "server_error"
