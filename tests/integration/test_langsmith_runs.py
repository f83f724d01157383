"""LangSmith receives runs that read right: a streamed CLI run, traced into a capture server on
127.0.0.1, names its LLM runs after the provider model with its provider, model and cost, and
carries the thread id, correlation id and profile on every run of the trace."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest

from multiagent.policies import load_settings
from multiagent.sim.model import build_simulated_model
from tests._loopback_http import refusing, silent
from tests.integration._langsmith_capture import langsmith_capture
from tests.integration._pii_scan import PII_TEXT, RAW, leaks

pytestmark = pytest.mark.slow


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "multiagent", *args],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def test_a_streamed_run_reaches_langsmith_named_priced_and_findable(isolated_env: Path) -> None:
    env = dict(os.environ)
    with langsmith_capture() as (endpoint, captured):
        env.update(
            LANGSMITH_TRACING="true", LANGSMITH_ENDPOINT=endpoint, LANGSMITH_API_KEY="dummy",
            LANGSMITH_PROJECT="capture",
        )  # fmt: skip
        # no --json: the live view streams, so the model calls run as streams
        done = _cli("run", "Plan a product launch", "--agents", "researcher,critic",
                    "--thread", "traced", "--memory", "off", env=env)  # fmt: skip
        assert done.returncode == 0, done.stderr
        runs = captured.all()
    assert "critic" in done.stdout  # every agent's tokens were shown under its name
    shown = _cli("threads", "show", "traced", "--json", env={**env, "LANGSMITH_TRACING": "false"})
    usage: dict[str, Any] = json.loads(shown.stdout)["usage"]

    roots = [r for r in runs if r.get("name") == "multiagent.orchestration"]
    assert len(roots) == 1
    root = roots[0]
    assert root["run_type"] == "chain"
    assert {"multiagent", "workflow:orchestration", "profile:dev_balanced"} <= set(root["tags"])
    root_meta = root["extra"]["metadata"]
    assert root_meta["thread_id"] == "traced"
    assert root_meta["profile"] == "dev_balanced"
    correlation = root_meta["correlation_id"]
    assert correlation

    llm = [r for r in runs if r.get("run_type") == "llm"]
    assert len(llm) == usage["calls"] == 4  # planner, two agents, synthesizer
    inner = build_simulated_model("gpt-4o-mini", load_settings())
    provider = inner._get_ls_params()["ls_provider"]
    assert provider == "sim"  # the provider's own name, not LangChain's guess from the class
    for run in llm:
        assert run["name"] == type(inner).__name__ != "PipelineChatModel"
        meta = run["extra"]["metadata"]
        assert meta["ls_provider"] == provider != "pipelinechatmodel"
        assert meta["ls_model_name"] in {"gpt-3.5-turbo", "gpt-4o-mini"}
        assert meta["thread_id"] == "traced"
        assert meta["correlation_id"] == correlation
        assert meta["profile"] == "dev_balanced"
        assert meta["agent"] in {"planner", "researcher", "critic", "synthesizer"}
        assert any(tag.startswith("agent:") for tag in run["tags"])
        cost = meta["usage_metadata"]
        assert cost["total_cost"] > 0
        assert cost["total_cost"] == pytest.approx(cost["input_cost"] + cost["output_cost"])
    # the cost LangSmith reads is the cost the run's ledger counted
    assert sum(r["extra"]["metadata"]["usage_metadata"]["total_cost"] for r in llm) == (
        pytest.approx(usage["cost_usd"], rel=1e-6)
    )
    # every call streamed: LangSmith keeps the first token's arrival of a streamed call
    streamed = [r for r in llm if any(e.get("name") == "new_token" for e in r.get("events", []))]
    assert len(streamed) == len(llm)


_CRM_TOOL = (
    '''
from langchain_core.tools import tool


@tool
def lookup_customer(name: str) -> str:
    """Look a customer up in the CRM by name."""
    return "record: '''
    + PII_TEXT.replace("'", "")
    + """"
"""
)


def test_a_tools_personal_values_never_reach_langsmith_when_the_profile_redacts(
    isolated_env: Path, tmp_path: Path
) -> None:
    # a tool's result enters the run as the user's input does: LangSmith is sent placeholders
    (tmp_path / "crm_tool.py").write_text(_CRM_TOOL, encoding="utf-8")
    isolated_env.mkdir(parents=True, exist_ok=True)
    (isolated_env / "agents.toml").write_text(
        '[agents.clerk]\nrole = "You are the researcher for customer cases."\n'
        'tools = ["crm_tool:lookup_customer"]\n',
        encoding="utf-8",
    )
    env = dict(os.environ, MULTIAGENT_ENV="prod_balanced")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(tmp_path), env.get("PYTHONPATH")]))
    with langsmith_capture() as (endpoint, captured):
        env.update(
            LANGSMITH_TRACING="true", LANGSMITH_ENDPOINT=endpoint, LANGSMITH_API_KEY="dummy",
            LANGSMITH_PROJECT="capture",
        )  # fmt: skip
        done = _cli("run", f"Answer the case of {RAW['email']}", "--agents", "clerk",
                    "--memory", "off", "--json", env=env)  # fmt: skip
        assert done.returncode == 0, done.stderr
        runs = captured.all()
    tool_runs = [r for r in runs if r.get("run_type") == "tool"]
    assert [r["name"] for r in tool_runs] == ["lookup_customer"]
    assert "[REDACTED_CARD]" in json.dumps(tool_runs[0]["outputs"])
    sent = [(f"langsmith {r.get('name')}", json.dumps(r, ensure_ascii=False).encode())
            for r in runs]  # fmt: skip
    assert leaks(iter(sent)) == []
    # the runs still read: the root run carries the (redacted) task
    root = next(r for r in runs if r.get("name") == "multiagent.orchestration")
    assert "[REDACTED_EMAIL]" in json.dumps(root["inputs"])


@pytest.mark.parametrize("endpoint", [refusing, silent], ids=["refused", "silent"])
def test_a_langsmith_endpoint_that_is_down_costs_one_line_not_the_clients_retries(
    isolated_env: Path, endpoint: Callable[[], AbstractContextManager[str]]
) -> None:
    # the subprocess's timeout is the bound: an endpoint that never answers held the exit for
    # each queued send's 60 s read timeout and its retries
    with endpoint() as url:
        env = dict(os.environ, LANGSMITH_TRACING="true", LANGSMITH_ENDPOINT=url)
        env["LANGSMITH_API_KEY"] = "dummy"
        done = _cli("run", "Plan a product launch", "--memory", "off", "--json", env=env)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["usage"]["calls"] > 0
    (line,) = done.stderr.splitlines()
    assert line.startswith("multiagent: LangSmith runs not delivered")
    assert url in line


_SCRIPT_WITHOUT_SHUTDOWN = """
from multiagent import configure_tracing, load_settings, run_config
from multiagent.sim.model import SimulatedChatModel

settings = load_settings()
configure_tracing(settings)
model = SimulatedChatModel(model="gpt-4o-mini", ttft_s=0, token_latency_s=0)
model.invoke("hello", run_config(workflow="demo", settings=settings, thread_id="t-1", live=False))
"""


def test_a_script_that_never_calls_shutdown_tracing_still_sends_its_runs(
    isolated_env: Path,
) -> None:
    # LangSmith's senders are daemon threads once tracing is configured: the exit flushes them
    with langsmith_capture() as (endpoint, captured):
        env = dict(os.environ, LANGSMITH_TRACING="true", LANGSMITH_ENDPOINT=endpoint)
        env["LANGSMITH_API_KEY"] = "dummy"
        done = subprocess.run(
            [sys.executable, "-c", _SCRIPT_WITHOUT_SHUTDOWN],
            env=env, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        runs = captured.all()
    assert done.returncode == 0, done.stderr
    assert [(r["run_type"], bool(r.get("end_time"))) for r in runs] == [("llm", True)]
